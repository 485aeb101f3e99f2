"""Shared fixtures: a small arith policy trained here once per test run (about a minute), and an untrained
tiny toy checkpoint for code paths that need a model but not a good one."""

import pytest

from ponder.training.policy import main as train_policy
from ponder.training.toy.model import build_model, build_tokenizer

# The recipe's architecture on one-digit problems only: after 500 steps it solves some level-1
# problems and slips on many, which is what search and labelling tests need.
SMALL_POLICY = [
    "--config", "recipes/toy/policy.yaml",
    "--levels", "1", "--train_operands", "2", "4", "--train_digits", "1", "1",
    "--max_steps", "500", "--max_train_minutes", "0", "--learning_rate", "2e-3",
    "--lr_scheduler_kwargs", '{"num_decay_steps": 150}',
    "--logging_steps", "100", "--eval_problems_per_level", "20", "--eval_samples", "4",
    "--eval_max_new_tokens", "64", "--disable_tqdm", "true",
]  # fmt: skip


@pytest.fixture(scope="package")  # tests/ is one package: trained once per run
def small_policy(tmp_path_factory):
    """A checkpoint folder with a policy that writes well-formed level-1 steps, some of them wrong."""
    output_dir = tmp_path_factory.mktemp("small_policy")
    train_policy(SMALL_POLICY + ["--output_dir", str(output_dir)])
    return output_dir


@pytest.fixture(scope="package")
def tiny_model(tmp_path_factory):
    """A checkpoint folder with an untrained one-layer toy model and the toy tokenizer (1,024 positions)."""
    folder = tmp_path_factory.mktemp("tiny_model")
    tokenizer = build_tokenizer()
    build_model(tokenizer, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
