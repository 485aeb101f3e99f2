"""Verifier features: labels at the inference scoring tokens, floats kept, truncation, bad rows, BPE merges."""

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from ponder.inference.metrics import auc, first_error_f1, within_group_auc
from ponder.inference.step_format import StepFormat, encode_steps
from ponder.training.labelling.formats import BadRowError
from ponder.training.toy.model import build_tokenizer
from ponder.training.verifiers.data import build_features
from ponder.training.verifiers.trainer import StepCollator, step_losses

ROW = {
    "id": "p0-s0",
    "problem_id": "p0",
    "prompt": "0001+0002+0003",
    "completions": ["0001+0002=0003", "0003+0003=0007", "Answer: 0007"],
    "labels": [0.375, 0.0, 0.0],
    "answer_correct": False,
}


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def test_soft_labels_stay_floats_to_the_loss(tokenizer):
    features, stats = build_features([ROW], tokenizer, StepFormat(), max_length=None)
    assert features[0]["labels"] == [0.375, 0.0, 0.0] and stats.labelled_steps == 3
    batch = StepCollator(tokenizer.pad_token_id)(features)
    assert batch["labels"].dtype == torch.float32 and batch["labels"][0, 0].item() == 0.375
    # BCE at logit 0 is log 2 whatever the target; at logit 2 it depends on the soft target.
    losses = step_losses(torch.tensor([[[2.0]]]), torch.tensor([[0.375]]))
    expected = -(
        0.375 * torch.log(torch.sigmoid(torch.tensor(2.0))) + 0.625 * torch.log(torch.sigmoid(torch.tensor(-2.0)))
    )
    assert torch.allclose(losses, expected)
    hard, _ = build_features([ROW], tokenizer, StepFormat(), max_length=None, label_type="hard")
    assert hard[0]["labels"] == [1.0, 0.0, 0.0]


def test_labels_sit_on_the_tokens_inference_scores(tokenizer):
    features, _ = build_features([ROW], tokenizer, StepFormat(), max_length=None)
    encoded = encode_steps(tokenizer, StepFormat(), ROW["prompt"], ROW["completions"])
    assert features[0]["positions"] == encoded.step_positions
    assert features[0]["input_ids"] == encoded.input_ids
    orm, _ = build_features([ROW], tokenizer, StepFormat(), max_length=None, target="answer")
    assert orm[0]["positions"] == encoded.step_positions[-1:] and orm[0]["labels"] == [0.0]
    last, _ = build_features([ROW], tokenizer, StepFormat(), max_length=None, last_step_only=True)
    assert last[0]["positions"] == encoded.step_positions[-1:] and last[0]["labels"] == [0.0]


def test_truncation_drops_steps_and_counts_them(tokenizer):
    full = encode_steps(tokenizer, StepFormat(), ROW["prompt"], ROW["completions"])
    features, stats = build_features([ROW], tokenizer, StepFormat(), max_length=full.step_positions[1] + 1)
    assert features[0]["positions"] == full.step_positions[:2] and features[0]["labels"] == [0.375, 0.0]
    assert stats.dropped_steps == 1
    _, stats = build_features([ROW], tokenizer, StepFormat(), max_length=full.step_positions[0], target="answer")
    assert stats.features == 0 and stats.rows_without_steps == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"completions": ["0001+0002=0003", "  ", "Answer: 0007"]}, "row 1 \\(id 'bad'\\): empty step"),
        ({"labels": [1.0, 0.0]}, "row 1 \\(id 'bad'\\): 2 labels for 3 steps"),
        ({"labels": [1.0, 0.0, 1.5]}, "label 1.5 is not a number in \\[0, 1\\]"),
        ({"completions": []}, "non-empty list"),
    ],
)
def test_bad_rows_are_named_or_skipped_and_counted(tokenizer, change, message):
    bad = {**ROW, "id": "bad", **change}
    with pytest.raises(BadRowError, match=message):
        build_features([ROW, bad], tokenizer, StepFormat(), max_length=None)
    features, stats = build_features([ROW, bad], tokenizer, StepFormat(), max_length=None, skip_bad_rows=True)
    assert len(features) == 1 and stats.bad_rows == 1 and stats.bad_row_examples


def bpe_tokenizer():
    """A byte-level BPE trained here until '.' merges with the '\n\n' delimiter after it."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    text = "The sum is 12.\n\nSo the answer is 12.\n\nWe add 3 to it.\n\n" * 200
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator([text], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>")


def test_a_delimiter_merged_into_the_last_token_still_labels_the_step():
    tok = bpe_tokenizer()
    steps = ["The sum is 12.", "So the answer is 12."]
    fmt = StepFormat(step_delimiter="\n\n", prompt_template="plain")
    text = "Q?\n\n" + "\n\n".join(steps) + "\n\n"
    offsets = tok(text, return_offsets_mapping=True)["offset_mapping"]
    encoded = encode_steps(tok, fmt, "Q?", steps)
    last_chars = [text.index(step) + len(step) - 1 for step in steps]
    for position, char in zip(encoded.step_positions, last_chars):
        start, stop = offsets[position]
        assert start <= char < stop  # the labelled token holds the step's final '.'
        assert stop > char + 1  # ... and, merged with it, the delimiter
    features, _ = build_features([{"prompt": "Q?", "completions": steps, "labels": [1.0, 0.0]}], tok, fmt, None)
    assert features[0]["positions"] == encoded.step_positions and features[0]["labels"] == [1.0, 0.0]


def test_ranking_metrics():
    assert auc([0.9, 0.8, 0.1], [True, True, False]) == 1.0
    assert auc([0.5, 0.5], [True, False]) == 0.5 and auc([0.2], [True]) is None
    with pytest.raises(ValueError, match="2 scores for 3 labels"):
        auc([0.1, 0.2], [True, False, True])
    # Pooled AUC rewards knowing that problem B is harder; within problems the order is chance.
    groups = [([0.9, 0.95, 0.92], [True, True, False]), ([0.1, 0.15, 0.12], [False, False, True])]
    assert auc([s for g in groups for s in g[0]], [y for g in groups for y in g[1]]) == pytest.approx(6 / 9)
    assert within_group_auc(groups) == 0.5
    assert within_group_auc([([0.9, 0.1], [True, False]), ([0.2, 0.1], [True, False])]) == 1.0
    f1 = first_error_f1([1, None, 0, None], [1, None, 2, 0])
    assert f1["erroneous_accuracy"] == pytest.approx(1 / 3) and f1["correct_accuracy"] == 1.0
    assert f1["f1"] == pytest.approx(2 * (1 / 3) / (1 / 3 + 1))


def test_step_min_labels_every_token_of_a_step_and_scores_by_the_lowest(tokenizer):
    from transformers import LlamaConfig, LlamaForTokenClassification

    from ponder.inference.step_format import step_spans
    from ponder.inference.verifiers import HFVerifier
    from ponder.training.verifiers.trainer import lowest_per_step

    features, stats = build_features([ROW], tokenizer, StepFormat(), max_length=None, read="step_min")
    spans = step_spans(encode_steps(tokenizer, StepFormat(), ROW["prompt"], ROW["completions"]))
    assert features[0]["positions"] == [p for span in spans for p in span] and stats.labelled_steps == 3
    assert features[0]["steps"] == [i for i, span in enumerate(spans) for _ in span]
    assert features[0]["labels"] == [label for label, span in zip(ROW["labels"], spans) for _ in span]
    scores = torch.tensor([[0.9, 0.5, 0.7, 0.4, 0.8, -100.0]])
    token_labels = torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0, -100.0]])
    lowest, labels = lowest_per_step(scores, token_labels, torch.tensor([[0, 0, 1, 1, 2, -1]]))
    assert lowest.tolist() == [[0.5, pytest.approx(0.4), pytest.approx(0.4)]] and labels.tolist() == [[1.0, 0.0, 0.0]]

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, num_labels=1, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForTokenClassification(config).eval()
    verifier = HFVerifier(model, tokenizer, "prm_token_classification", StepFormat(), read="step_min")
    scored = verifier.score([ROW["prompt"]], [ROW["completions"]])[0].step_scores
    with torch.no_grad():
        probs = torch.sigmoid(model(torch.tensor([features[0]["input_ids"]])).logits[0, :, 0])
    lowest = [probs[: span[-1] + 1][spans[0][0] :].min().item() for span in spans]  # the solution so far
    assert scored == pytest.approx(lowest, abs=1e-6)


def test_oracle_report_of_a_one_score_verifier_uses_the_whole_solution_label():
    from ponder.inference.verifiers import Scored
    from ponder.training.verifiers.judging import JudgedProblem, JudgedSample, judge

    right = JudgedSample(["a", "b", "Answer: 3"], "3", True, [True, True, True])
    wrong = JudgedSample(["a", "c", "Answer: 4"], "4", False, [True, False, False])

    class OneScore:  # an ORM: one score per solution
        def score(self, questions, steps):
            return [Scored([0.9 if s[-1] == "Answer: 3" else 0.2], 10) for s in steps]

    report = judge(OneScore(), [JudgedProblem("q", 2, "3", [right, wrong, wrong])])["all"]
    assert report["step_auc_oracle"] == report["step_auc_within_problem"] == 1.0
    assert report["solution_auc_within_problem"] == 1.0 and report["weighted_bon"] == 1.0
    assert report["majority_bon"] == 0.0
