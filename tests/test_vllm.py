"""The vLLM backend against the real engine (vLLM's CPU build here; skipped where vLLM is not installed).

Generation: distinct samples for identical prompts, greedy text equal to the HF backend's. Scoring: a
token-classification PRM through vLLM's pooling runner equals the transformers scores.
"""

import json
import os

import pytest
import torch

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache on the CPU build; read at import
pytest.importorskip("vllm", reason="vLLM is not installed")

from transformers import LlamaForTokenClassification  # noqa: E402

from ponder.inference.engine import EngineConfig  # noqa: E402
from ponder.inference.generation import HFGenerator, SamplingParams, VLLMGenerator, chat_prompt  # noqa: E402
from ponder.inference.verifiers import METADATA_FILE, HFVerifier, VLLMVerifier, load_verifier  # noqa: E402
from ponder.training.toy.model import build_model, build_tokenizer  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")
ENGINE = EngineConfig(backend="vllm", dtype="float32", enforce_eager=True)


@pytest.fixture(scope="module")
def toy_policy(tmp_path_factory):
    tokenizer = build_tokenizer()
    # head_dim 64: the CPU build's attention kernels take 32, 64, 80, 96, 112, 128, ... not 16
    model = build_model(tokenizer, hidden_size=128, num_layers=2, num_heads=2, intermediate_size=128, seed=3).eval()
    path = tmp_path_factory.mktemp("toy_policy")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, model, tokenizer


@pytest.fixture(scope="module")
def vllm_generator(toy_policy):
    return VLLMGenerator(str(toy_policy[0]), ENGINE, seed=0)


def test_identical_prompts_get_distinct_samples(vllm_generator, toy_policy):
    _, _, tokenizer = toy_policy
    prompt = chat_prompt(tokenizer, "0012+0034")
    params = SamplingParams(n=4, temperature=1.0, max_new_tokens=16, seed=7)
    out = vllm_generator.generate([prompt, prompt, prompt], params)
    texts = [c.text for row in out for c in row]
    assert [len(row) for row in out] == [4, 4, 4]
    assert len(set(texts)) == len(texts), texts  # 12 samples of 16 random tokens from a random model: no repeats
    assert vllm_generator.stats.sequences == 12


def test_different_prompts_draw_from_separate_streams(vllm_generator, toy_policy):
    """Two prompts whose next-token distributions match (the model sees only their last tokens alike) must
    not get the same samples: one seed shared by the requests would replay one random stream for both."""
    _, _, tokenizer = toy_policy
    prompts = [chat_prompt(tokenizer, "0012+0034"), chat_prompt(tokenizer, "0012+0034 ")]
    params = SamplingParams(n=8, temperature=1.0, max_new_tokens=12, seed=5)
    first, second = vllm_generator.generate(prompts, params)
    assert {c.text for c in first}.isdisjoint({c.text for c in second})


def test_vllm_greedy_matches_hf_greedy(vllm_generator, toy_policy):
    _, model, tokenizer = toy_policy
    prompts = [chat_prompt(tokenizer, q) for q in ["0001+0002+0003", "0037+0048-0019"]]
    params = SamplingParams(n=2, temperature=0, max_new_tokens=12, stop=("\n",))
    ours = vllm_generator.generate(prompts, params)
    reference = HFGenerator(model, tokenizer).generate(prompts, params)
    assert [[c.text for c in cs] for cs in ours] == [[c.text for c in cs] for cs in reference]


def test_vllm_prm_scores_equal_the_hf_scores(toy_policy, tmp_path):
    path, policy, tokenizer = toy_policy
    torch.manual_seed(0)
    prm = LlamaForTokenClassification(policy.config.__class__(**{**policy.config.to_dict(), "num_labels": 1}))
    prm.model.load_state_dict(policy.model.state_dict())
    prm.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    layout = {"kind": "prm_token_classification", "prompt_template": "chat", "step_delimiter": "\n"}
    (tmp_path / METADATA_FILE).write_text(json.dumps(layout))
    questions = ["0012+0034-0005", "0007+0008"]
    steps = [["0012+0034=0046", "0046-0005=0041", "Answer: 0041"], ["0007+0008=0015", "Answer: 0016"]]

    hf = load_verifier(tmp_path, engine=EngineConfig(backend="hf"))
    vllm = load_verifier(tmp_path, engine=ENGINE)
    assert isinstance(hf, HFVerifier) and isinstance(vllm, VLLMVerifier)
    expected, got = hf.score(questions, steps), vllm.score(questions, steps)
    for a, b in zip(expected, got):
        assert len(a.step_scores) == len(b.step_scores)
        torch.testing.assert_close(torch.tensor(b.step_scores), torch.tensor(a.step_scores), atol=1e-4, rtol=0)
    assert len({round(s, 4) for r in expected for s in r.step_scores}) > 1  # a head that tells steps apart
