"""Converters from Math-Shepherd and PRM800K rows to the stepwise format (on ../shared/data samples)."""

import json
from pathlib import Path

import pytest

from ponder.training.labelling.formats import BadRowError, convert_file, from_math_shepherd, from_prm800k

FORMATS = Path(__file__).resolve().parents[2] / "shared" / "data" / "formats"
needs_data = pytest.mark.skipif(not FORMATS.exists(), reason="../shared/data/formats is not here")


@needs_data
def test_math_shepherd_sample_rows():
    rows, skipped = convert_file(FORMATS / "math_shepherd_sample.jsonl", "math_shepherd")
    assert len(rows) == 7 and skipped == 0
    first = rows[0]
    assert first["prompt"].startswith("Janet pays $40/hour") and first["prompt"].endswith("in a year?")
    assert first["completions"][0].startswith("Step 1: Janet spends 3 hours") and len(first["completions"]) == 5
    assert first["labels"] == [1.0, 1.0, 1.0, 1.0, 0.0] and first["hard"] == [True, True, True, True, False]
    assert not first["answer_correct"] and first["rollouts"] == [0] * 5
    assert all("ки" not in step for row in rows for step in row["completions"])


@needs_data
def test_prm800k_sample_rows_follow_the_labelled_trajectory():
    rows, _ = convert_file(FORMATS / "prm800k_sample.jsonl", "prm800k")
    source = [json.loads(line) for line in (FORMATS / "prm800k_sample.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    for row, raw in zip(rows, source):
        assert row["prompt"] == raw["question"]["problem"]
        assert row["answer_correct"] == (raw["label"]["finish_reason"] == "solution")
    assert rows[0]["completions"][1] == source[0]["label"]["steps"][1]["human_completion"]["text"]  # no chosen one
    assert rows[1]["labels"][-1] == 0.0 and source[1]["label"]["finish_reason"] == "found_error"


def test_bad_rows_are_named_or_skipped_and_counted(tmp_path):
    with pytest.raises(BadRowError, match="row 3: no 'ки' step tag"):
        from_math_shepherd({"input": "no tags", "label": "no tags"}, 3)
    with pytest.raises(BadRowError, match="row 0: expected '\\+' or '-'"):
        from_math_shepherd({"input": "Q Step 1: a ки", "label": "Q Step 1: a ?"}, 0)
    with pytest.raises(BadRowError, match="row 5: missing field 'question'"):
        from_prm800k({"label": {"steps": []}}, 5)
    path = tmp_path / "mixed.jsonl"
    good = {"input": "Q? Step 1: a ки\nStep 2: b ки", "label": "Q? Step 1: a +\nStep 2: b -"}
    path.write_text(json.dumps(good) + "\n{not json\n" + json.dumps({"input": "x", "label": "x"}) + "\n")
    rows, skipped = convert_file(path, "math_shepherd", skip_bad_rows=True)
    assert skipped == 2 and rows[0]["completions"] == ["Step 1: a", "Step 2: b"] and rows[0]["labels"] == [1.0, 0.0]
    with pytest.raises(BadRowError, match="mixed.jsonl: .*row 1"):
        convert_file(path, "math_shepherd")
