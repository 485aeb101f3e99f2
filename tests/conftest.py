"""Shared fixtures: a small arith policy trained here once per test run (about a minute)."""

import pytest

from ponder.training.policy import main as train_policy

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
