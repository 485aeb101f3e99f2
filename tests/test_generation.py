"""HF generation backend: matches transformers' own greedy decoding, stops, counts tokens."""

from types import SimpleNamespace

import pytest
import torch

from ponder.inference.generation import (
    Completion,
    EngineConfig,
    HFGenerator,
    SamplingParams,
    VLLMGenerator,
    chat_prompt,
    make_generator,
    vllm_completion,
)
from ponder.inference.metrics import majority_answer, paired_difference, pass_at_k
from ponder.training.toy.model import build_model, build_tokenizer


@pytest.fixture(scope="module")
def toy():
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, seed=3)
    return model.eval(), tokenizer


def test_greedy_matches_transformers_generate_with_left_padding(toy):
    model, tokenizer = toy
    prompts = [chat_prompt(tokenizer, q) for q in ["1+2+3", "37+48-19+26", "5-9"]]
    ours = HFGenerator(model, tokenizer).generate(prompts, SamplingParams(temperature=0, max_new_tokens=12))
    for prompt, (completion,) in zip(prompts, ours):
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
        reference = model.generate(**ids, do_sample=False, max_new_tokens=12, eos_token_id=tokenizer.eos_token_id)
        new = reference[0, ids["input_ids"].shape[1] :].tolist()
        if tokenizer.eos_token_id in new:
            new = new[: new.index(tokenizer.eos_token_id)]
        assert completion.text == tokenizer.decode(new)


def test_shared_prompt_cache_gives_the_same_samples_as_repeated_prompts(toy):
    model, tokenizer = toy
    prompt = chat_prompt(tokenizer, "12+34-5")
    generator = HFGenerator(model, tokenizer)
    shared = generator.generate([prompt], SamplingParams(n=4, temperature=0, max_new_tokens=10))[0]
    single = generator.generate([prompt], SamplingParams(n=1, temperature=0, max_new_tokens=10))[0][0]
    assert [c.text for c in shared] == [single.text] * 4


def test_sampling_is_seeded_and_counts_tokens(toy):
    model, tokenizer = toy
    prompts = [chat_prompt(tokenizer, q) for q in ["1+2+3", "4-5+6"]]
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=15, seed=11)
    generator = HFGenerator(model, tokenizer, max_batch_sequences=3)  # forces one prompt per batch
    first = generator.generate(prompts, params)
    second = HFGenerator(model, tokenizer, max_batch_sequences=3).generate(prompts, params)
    assert [[c.text for c in row] for row in first] == [[c.text for c in row] for row in second]
    assert [len(row) for row in first] == [3, 3]
    assert generator.stats.generated_tokens == sum(c.num_tokens for row in first for c in row)
    assert generator.stats.sequences == 6
    for row in first:
        for completion in row:
            assert completion.num_tokens <= 15
            assert completion.finish_reason in ("eos", "length")


def test_sequences_end_at_the_models_last_position():
    tokenizer = build_tokenizer(model_max_length=48)
    model = build_model(tokenizer, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                        max_position_embeddings=48, seed=3).eval()  # fmt: skip
    prompts = [chat_prompt(tokenizer, q) for q in ["1+2+3", "37+48-19+26"]]
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    params = SamplingParams(n=8, temperature=1.0, max_new_tokens=100, seed=0)
    for length, completions in zip(lengths, HFGenerator(model, tokenizer).generate(prompts, params)):
        assert all(c.num_tokens <= 48 - length for c in completions)  # prompt and answer inside 48 positions
        assert {c.finish_reason for c in completions if c.num_tokens == 48 - length} == {"length"}


def test_stop_strings_end_each_sequence_at_its_own_step(toy):
    model, tokenizer = toy
    prompts = [chat_prompt(tokenizer, q) for q in ["1+2+3", "4-5+6", "7+8"]]
    out = HFGenerator(model, tokenizer).generate(
        prompts, SamplingParams(n=5, temperature=1.5, max_new_tokens=40, stop=("\n",), seed=0)
    )
    for row in out:
        for completion in row:
            if completion.finish_reason == "stop":
                assert completion.text.endswith("\n") and completion.text.count("\n") == 1
            else:
                assert "\n" not in completion.text


def test_top_p_keeps_only_the_nucleus():
    from ponder.inference.generation import _sample

    logits = torch.log(torch.tensor([[0.6, 0.3, 0.05, 0.05]]))
    generator = torch.Generator().manual_seed(0)
    draws = {_sample(logits, 1.0, 0.5, generator).item() for _ in range(50)}
    assert draws == {0}


def test_pass_at_k_and_majority():
    assert pass_at_k(16, 0, 1) == 0.0 and pass_at_k(16, 16, 1) == 1.0
    assert pass_at_k(16, 4, 1) == pytest.approx(0.25)
    assert pass_at_k(16, 1, 16) == 1.0
    assert pass_at_k(4, 2, 2) == pytest.approx(1 - (2 / 4) * (1 / 3))
    assert majority_answer(["3", None, "4", "3"]) == "3"
    assert majority_answer([None, None]) is None


def test_a_paired_difference_is_measured_against_the_spread_of_its_gaps():
    # The same gap on every problem has no error; problems both systems solve or both fail cancel out.
    assert paired_difference([1, 1, 0, 0], [0, 0, -1, -1]) == (1.0, 0.0)
    first, second = [1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]
    gain, error = paired_difference(first, second)
    # gaps 0 0 1 0 0 0: sample variance (5/36 + 25/36) / 5 = 1/6, so the error is sqrt(1/6 / 6) = 1/6
    assert gain == pytest.approx(1 / 6) and error == pytest.approx(1 / 6)
    assert paired_difference([1], [0]) == (1.0, None)
    with pytest.raises(ValueError, match="equal, non-empty"):
        paired_difference([1, 0], [1])


def test_vllm_outputs_map_to_completions():
    def output(finish, stop_reason):
        text = "0001+0002=0003\n"
        return SimpleNamespace(text=text, token_ids=[5] * 15, finish_reason=finish, stop_reason=stop_reason)

    assert vllm_completion(output("stop", "\n")).finish_reason == "stop"
    assert vllm_completion(output("stop", None)).finish_reason == "eos"
    assert vllm_completion(output("length", None)) == Completion("0001+0002=0003\n", 15, "length")
    with pytest.raises(ValueError, match="unknown backend"):
        make_generator("unused", EngineConfig(backend="tgi"))


def test_make_generator_loads_a_checkpoint_with_the_hf_backend(toy, tmp_path):
    model, tokenizer = toy
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    generator = make_generator(str(tmp_path), EngineConfig(backend="hf"))
    assert isinstance(generator, HFGenerator) and generator.tokenizer.pad_token == tokenizer.pad_token


def test_identical_prompts_are_encoded_once_and_keep_their_order(toy):
    model, tokenizer = toy
    a, b = chat_prompt(tokenizer, "0001+0002"), chat_prompt(tokenizer, "0037+0048-0019")
    generator = HFGenerator(model, tokenizer)
    params = SamplingParams(n=2, temperature=0, max_new_tokens=8)
    out = generator.generate([a, b, a], params)
    assert [len(x) for x in out] == [2, 2, 2]
    alone = HFGenerator(model, tokenizer).generate([b], params)[0]
    assert [c.text for c in out[1]] == [c.text for c in alone] and [c.text for c in out[0]] == [c.text for c in out[2]]
    assert generator.stats.prompt_tokens == len(tokenizer(a + b, add_special_tokens=False)["input_ids"])
    assert generator.stats.sequences == 6


def test_vllm_request_seeds_differ_per_distinct_prompt():
    generator = VLLMGenerator.__new__(VLLMGenerator)  # the seeding rule alone, without starting an engine
    generator.engine, generator._calls_seeded = EngineConfig(sampling_seeds="request"), 0
    seeds = [generator._request_seed(3, index) for index in range(4)]
    assert len(set(seeds)) == 4 and generator._request_seed(None, 0) is None
    generator.engine = EngineConfig(sampling_seeds="engine")
    assert generator._request_seed(3, 0) is None


def test_each_process_engine_owns_its_block_of_gpus():
    from ponder.inference.engine import engine_gpus

    assert engine_gpus("cuda:0", 1, None) == "0" and engine_gpus("cuda:3", 1, None) == "3"
    assert engine_gpus("cuda:1", 2, None) == "2,3"  # tensor parallel: process 1 takes the second pair
    assert engine_gpus("cuda:1", 2, "4,5,6,7") == "6,7"  # counted among the visible GPUs
    assert engine_gpus("cpu", 1, None) is None and engine_gpus(None, 1, None) is None
    with pytest.raises(ValueError, match="launch"):
        engine_gpus("cuda:2", 2, "0,1,2,3")


def test_make_generator_places_the_model_on_the_given_device_with_the_engine_dtype(toy, tmp_path):
    model, tokenizer = toy
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    generator = make_generator(str(tmp_path), EngineConfig(backend="hf", dtype="bfloat16"), device="cpu")
    assert generator.device == torch.device("cpu") and generator.model.dtype == torch.bfloat16
