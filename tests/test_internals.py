"""The private corners of transformers and TRL that ponder builds on, checked against the installed releases.

pyproject.toml bounds transformers and TRL to releases where these hold; a failure here names what moved.
"""

import inspect

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments
from transformers.cache_utils import DynamicCache, DynamicLayer
from trl import TrlParser

from ponder.inference.generation import PreallocatedLayer, preallocate
from ponder.inference.model_io import cache_argument, returned_cache


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def test_a_preallocated_cache_decodes_like_transformers_dynamic_cache():
    """`PreallocatedLayer` subclasses `DynamicLayer` (its keys/values/update/batch_select_indices)."""
    model, ids = tiny_llama(), torch.randint(0, 64, (2, 9))
    with torch.no_grad():
        full = model(input_ids=ids).logits[:, -1]
        out = model(input_ids=ids[:, :-1], use_cache=True, **cache_argument(model, DynamicCache(config=model.config)))
        cache = preallocate(returned_cache(out), extra_positions=4)
        assert all(isinstance(layer, PreallocatedLayer) for layer in cache.layers)
        cache.batch_select_indices(torch.tensor([0, 1]))
        step = model(input_ids=ids[:, -1:], use_cache=True, **cache_argument(model, cache)).logits[:, -1]
    torch.testing.assert_close(step, full, rtol=1e-5, atol=1e-5)
    assert {"keys", "values", "is_initialized"} <= set(vars(cache.layers[0]))
    assert {"update", "batch_select_indices", "lazy_initialization"} <= set(dir(DynamicLayer))


def test_trainer_keeps_the_label_shift_switch_the_verifier_trainer_turns_off(tmp_path):
    trainer = Trainer(model=tiny_llama(), args=TrainingArguments(output_dir=str(tmp_path), report_to=[]))
    assert isinstance(trainer._loss_shifts_labels, bool)
    assert "_loss_shifts_labels" in inspect.getsource(Trainer)


def test_trl_parser_reads_a_config_file_and_reports_remaining_strings():
    parameters = inspect.signature(TrlParser.parse_args_and_config).parameters
    assert {"args", "return_remaining_strings", "fail_with_unknown_args"} <= set(parameters)
