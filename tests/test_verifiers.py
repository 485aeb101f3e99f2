"""Verifier scoring: step positions shared with training, batched = one-at-a-time, kinds, oracle."""

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification, LlamaForTokenClassification

from ponder.inference.step_format import StepFormat, StepTagError, encode_steps
from ponder.inference.tasks import get_task
from ponder.inference.verifiers import HFVerifier, OracleVerifier, aggregate, load_verifier
from ponder.training.toy.model import build_tokenizer

QUESTIONS = ["0001+0002+0003", "0037+0048-0019", "0005+0004"]
STEPS = [
    ["0001+0002=0003", "0003+0003=0006", "Answer: 0006"],
    ["0037+0048=0085", "0085-0019=0067"],
    ["0005+0004=0009", "Answer: 0009"],
]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def tiny_config(tokenizer, **kwargs):
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        **kwargs,
    )


def test_steps_are_scored_at_their_last_character_or_tag(tokenizer):
    plain = encode_steps(tokenizer, StepFormat(), QUESTIONS[0], STEPS[0])
    assert [tokenizer.decode([plain.input_ids[p]]) for p in plain.step_positions] == ["3", "6", "6"]
    assert tokenizer.decode(plain.input_ids).endswith("<|assistant|>" + "\n".join(STEPS[0]))
    tagged = encode_steps(tokenizer, StepFormat(step_tag="#"), QUESTIONS[0], STEPS[0])
    assert [tokenizer.decode([tagged.input_ids[p]]) for p in tagged.step_positions] == ["#"] * 3
    assert len(tagged.input_ids) == len(plain.input_ids) + 3


def test_truncation_drops_whole_steps_and_counts_them(tokenizer):
    full = encode_steps(tokenizer, StepFormat(), QUESTIONS[0], STEPS[0])
    cut = encode_steps(tokenizer, StepFormat(), QUESTIONS[0], STEPS[0], max_length=full.step_positions[1] + 1)
    assert cut.step_positions == full.step_positions[:2] and cut.dropped_steps == 1
    assert cut.input_ids == full.input_ids[: full.step_positions[1] + 1]


def test_a_step_tag_that_is_not_one_token_is_an_error(tokenizer):
    with pytest.raises(StepTagError, match="after step 0 is not one token"):
        encode_steps(tokenizer, StepFormat(step_tag=" ки"), QUESTIONS[0], STEPS[0])
    with pytest.raises(ValueError, match="prompt_template"):
        StepFormat(prompt_template="jinja")


def test_aggregations():
    assert aggregate([0.5, 0.2, 0.8], "last") == 0.8 and aggregate([0.5, 0.2, 0.8], "min") == 0.2
    assert aggregate([0.5, 0.2], "prod") == pytest.approx(0.1) and aggregate([0.5, 0.2], "mean") == 0.35
    with pytest.raises(ValueError, match="unknown aggregation 'max'"):
        aggregate([1.0], "max")


def _manual_scores(model, tokenizer, fmt, question, steps, pick):
    encoded = encode_steps(tokenizer, fmt, question, steps)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([encoded.input_ids])).logits[0]
    return pick(logits, encoded.step_positions)


def test_token_classification_prm_batched_equals_single_and_manual(tokenizer, tmp_path):
    torch.manual_seed(0)
    model = LlamaForTokenClassification(tiny_config(tokenizer, num_labels=1)).eval()
    verifier = HFVerifier(model, tokenizer, "prm_token_classification", StepFormat(), max_batch_tokens=64)
    batched = verifier.score(QUESTIONS, STEPS)
    single = [verifier.score([q], [s])[0] for q, s in zip(QUESTIONS, STEPS)]
    manual = [
        _manual_scores(model, tokenizer, StepFormat(), q, s, lambda lg, pos: torch.sigmoid(lg[pos, 0]).tolist())
        for q, s in zip(QUESTIONS, STEPS)
    ]
    for b, one, m, steps in zip(batched, single, manual, STEPS):
        assert len(b.step_scores) == len(steps)
        assert b.step_scores == pytest.approx(one.step_scores, abs=1e-5)
        assert b.step_scores == pytest.approx(m, abs=1e-5)
        assert b.num_tokens == one.num_tokens > 0
    assert verifier.stats.sequences == 6 and verifier.stats.tokens == 2 * sum(b.num_tokens for b in batched)

    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    (tmp_path / "ponder.json").write_text(json.dumps({"kind": "prm_token_classification", "step_delimiter": "\n"}))
    loaded = load_verifier(tmp_path).score(QUESTIONS, STEPS)
    for r, b in zip(loaded, batched):
        assert r.step_scores == pytest.approx(b.step_scores, abs=1e-5)


def test_causal_lm_prm_reads_positive_versus_negative_at_the_tag(tokenizer, tmp_path):
    torch.manual_seed(1)
    model = LlamaForCausalLM(tiny_config(tokenizer)).eval()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    overrides = {"kind": "prm_causal_lm", "step_tag": "#", "positive_token": "+", "negative_token": "-"}
    verifier = load_verifier(tmp_path, **overrides)  # a third-party checkpoint: no ponder.json
    plus, minus = tokenizer.convert_tokens_to_ids(["+", "-"])
    fmt = StepFormat(step_tag="#")
    for question, steps, scored in zip(QUESTIONS, STEPS, verifier.score(QUESTIONS, STEPS)):
        expected = _manual_scores(
            model, tokenizer, fmt, question, steps, lambda lg, pos: torch.softmax(lg[pos][:, [minus, plus]], -1)[:, 1]
        )
        assert scored.step_scores == pytest.approx(expected.tolist(), abs=1e-5)
    with pytest.raises(ValueError, match="needs step_tag"):
        load_verifier(tmp_path, kind="prm_causal_lm")


def test_orm_gives_one_score_per_solution(tokenizer):
    torch.manual_seed(2)
    model = LlamaForSequenceClassification(tiny_config(tokenizer, num_labels=1)).eval()
    verifier = HFVerifier(model, tokenizer, "orm", StepFormat())
    batched = verifier.score(QUESTIONS, STEPS)
    single = [verifier.score([q], [s])[0] for q, s in zip(QUESTIONS, STEPS)]
    assert all(len(b.step_scores) == 1 for b in batched)
    assert [b.step_scores[0] for b in batched] == pytest.approx([s.step_scores[0] for s in single], abs=1e-5)
    assert len({b.step_scores[0] for b in batched}) == 3


def test_oracle_verifier_is_one_until_the_first_wrong_step():
    oracle = OracleVerifier(get_task("arith"))
    wrong = ["0037+0048=0085", "0085-0019=0067", "Answer: 0067"]
    scores = oracle.score(QUESTIONS[1:2] * 2, [STEPS[1], wrong])
    assert scores[0].step_scores == [1.0, 0.0] and scores[1].step_scores == [1.0, 0.0, 0.0]
    assert oracle.score(["0037+0048-0019"], [["0037+0048=0085", "0085-0019=0066", "Answer: 0066"]])[0].step_scores == [
        1.0,
        1.0,
        1.0,
    ]


def test_policy_likelihood_is_the_running_lowest_token_probability(tokenizer):
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config(tokenizer)).eval()
    verifier = HFVerifier(model, tokenizer, "policy_likelihood", StepFormat(), aggregation="min")
    scored = verifier.score(QUESTIONS, STEPS)  # batched with padding
    for question, steps, result in zip(QUESTIONS, STEPS, scored):
        encoded = encode_steps(tokenizer, StepFormat(), question, steps)
        ids = torch.tensor(encoded.input_ids)
        with torch.no_grad():
            logprobs = torch.log_softmax(model(ids[None]).logits[0, :-1], -1).gather(-1, ids[1:, None])[:, 0]
        expected, lowest = [], 1.0
        for start, end in zip(encoded.step_starts, encoded.step_positions):
            lowest = min(lowest, logprobs[start - 1 : end].exp().min().item())
            expected.append(lowest)
        assert result.step_scores == pytest.approx(expected, abs=1e-5)


BEAM_STEPS = [  # a beam's children: shared steps, then their own (and one solution sharing only the prompt)
    ["0001+0002=0003", "0003+0003=0006", "Answer: 0006"],
    ["0001+0002=0003", "0003+0003=0007"],
    ["0001+0002=0003", "0003+0003=0006", "Answer: 0007"],
    ["0001+0002=0004"],
]


@pytest.mark.parametrize(
    "kind, model_class, options",
    [
        ("policy_likelihood", LlamaForCausalLM, {}),
        ("prm_token_classification", LlamaForTokenClassification, {}),
        ("prm_token_classification", LlamaForTokenClassification, {"read": "step_min"}),
        ("prm_causal_lm", LlamaForCausalLM, {"positive_token": "+", "negative_token": "-"}),
    ],
)
def test_shared_prefixes_score_like_whole_sequences_for_fewer_tokens(tokenizer, kind, model_class, options):
    torch.manual_seed(3)
    extra = {"num_labels": 1} if model_class is LlamaForTokenClassification else {}
    model = model_class(tiny_config(tokenizer, **extra)).eval()
    fmt = StepFormat(step_tag="#") if kind == "prm_causal_lm" else StepFormat()
    questions = [QUESTIONS[0]] * len(BEAM_STEPS) + QUESTIONS[1:]
    steps = BEAM_STEPS + STEPS[1:]
    shared = HFVerifier(model, tokenizer, kind, fmt, max_batch_tokens=96, **options)
    whole = HFVerifier(model, tokenizer, kind, fmt, **options)
    whole.shares_prefixes = False
    assert shared.shares_prefixes
    for s, w in zip(shared.score(questions, steps), whole.score(questions, steps)):
        assert s.step_scores == pytest.approx(w.step_scores, abs=1e-5)
    assert shared.stats.tokens < whole.stats.tokens


def test_bidirectional_models_and_orms_run_whole_sequences(tokenizer):
    from transformers import BertConfig, BertForTokenClassification

    bert = BertForTokenClassification(
        BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            num_labels=1,
        )
    )
    assert not HFVerifier(bert, tokenizer, "prm_token_classification", StepFormat()).shares_prefixes
    orm = LlamaForSequenceClassification(tiny_config(tokenizer, num_labels=1))
    assert not HFVerifier(orm, tokenizer, "orm", StepFormat()).shares_prefixes
