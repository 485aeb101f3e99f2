"""Causal verifiers at a real vocabulary size: bounded memory, and the same scores as the model's logits."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import Gemma2Config, Gemma2ForCausalLM, LlamaConfig, LlamaForCausalLM

from ponder.inference.verifiers import lm_head_logits, next_token_logprobs

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "verifier_memory.py"


@pytest.mark.slow
def test_scoring_64_candidates_at_a_152k_vocabulary_stays_under_2_gib():
    for kind in ("policy_likelihood", "prm_causal_lm"):
        out = subprocess.run(
            [sys.executable, str(BENCHMARK), "--kind", kind], capture_output=True, text=True, check=True
        ).stdout
        record = json.loads(out.strip().splitlines()[-1])
        assert record["tokens_per_candidate"] >= 480 and record["candidates"] == 64
        assert record["peak_gib"] <= 2.0, record


def _tiny(config_type, model_type, **extra):
    torch.manual_seed(0)
    config = config_type(
        vocab_size=300,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        head_dim=8,
        **extra,
    )
    return model_type(config).eval()


def test_head_logits_from_hidden_states_equal_the_models_logits():
    models = [
        _tiny(LlamaConfig, LlamaForCausalLM),
        _tiny(Gemma2Config, Gemma2ForCausalLM, final_logit_softcapping=0.5),  # soft-capping applied
    ]
    ids = torch.randint(0, 300, (2, 17))
    for model in models:
        with torch.no_grad():
            reference = model(input_ids=ids).logits.float()
            hidden = model.get_decoder()(input_ids=ids).last_hidden_state
            torch.testing.assert_close(lm_head_logits(model, hidden), reference, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(lm_head_logits(model, hidden, rows=[7, 3]), reference[..., [7, 3]])
            expected = torch.log_softmax(reference[0, :-1], -1).gather(-1, ids[0, 1:, None])[:, 0]
            torch.testing.assert_close(next_token_logprobs(model, hidden[0, :-1], ids[0, 1:]), expected)


def test_next_token_logprobs_in_blocks_equal_one_block(monkeypatch):
    model = _tiny(LlamaConfig, LlamaForCausalLM)
    ids = torch.randint(0, 300, (1, 40))
    with torch.no_grad():
        hidden = model.get_decoder()(input_ids=ids).last_hidden_state[0, :-1]
        whole = next_token_logprobs(model, hidden, ids[0, 1:])
        monkeypatch.setattr("ponder.inference.verifiers.POSITIONS_PER_BLOCK", 300 * 3)  # 3 positions a block
        torch.testing.assert_close(next_token_logprobs(model, hidden, ids[0, 1:]), whole)
