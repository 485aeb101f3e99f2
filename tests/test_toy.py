"""Toy tokenizer and model: a lossless character round trip through `AutoTokenizer` on a saved folder."""

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ponder.training.toy.model import ASSISTANT, USER, build_model, build_tokenizer

TEXT = "37+48=85\n85-19=66\n  spaces  and\ttabs?\nAnswer: -92"


def test_one_token_per_character_and_lossless_decode():
    tokenizer = build_tokenizer()
    ids = tokenizer("37+48=85\nAnswer: 85", add_special_tokens=False)["input_ids"]
    assert len(ids) == len("37+48=85\nAnswer: 85")
    assert tokenizer.decode(ids) == "37+48=85\nAnswer: 85"
    assert len(tokenizer(USER + "1+1" + ASSISTANT, add_special_tokens=False)["input_ids"]) == 5


def test_saved_checkpoint_round_trips_through_auto_classes(tmp_path):
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()

    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "37+48=85\n85-19=66\n  two  spaces\nAnswer: -92"
    assert loaded(text, add_special_tokens=False)["input_ids"] == tokenizer(text, add_special_tokens=False)["input_ids"]
    assert loaded.decode(loaded(text, add_special_tokens=False)["input_ids"]) == text
    assert loaded.padding_side == "left" and loaded.pad_token == "<pad>" and loaded.eos_token == "</s>"

    messages = [{"role": "user", "content": "37+48"}, {"role": "assistant", "content": "37+48=85\nAnswer: 85"}]
    rendered = loaded.apply_chat_template(messages, tokenize=False)
    assert rendered == "<s><|user|>37+48\n<|assistant|>37+48=85\nAnswer: 85</s>\n"
    prompt = loaded.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt == "<s><|user|>37+48\n<|assistant|>"
    encoded = loaded.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
    assistant_ids = [i for i, m in zip(encoded["input_ids"], encoded["assistant_masks"]) if m]
    assert loaded.decode(assistant_ids) == "37+48=85\nAnswer: 85</s>"

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert reloaded.config.model_type == "llama" and reloaded.config.max_position_embeddings >= 1024
    ids = torch.tensor([loaded(prompt, add_special_tokens=False)["input_ids"]])
    torch.testing.assert_close(reloaded(ids).logits, model(ids).logits)
