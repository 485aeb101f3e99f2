"""`ponder pipeline`: runs the recipe folder's stages as subprocesses and resumes finished ones."""

import json
import subprocess
import sys

TINY = ["--levels", "1", "--hidden_size", "32", "--num_layers", "1", "--num_heads", "2", "--intermediate_size", "64",
        "--max_steps", "5", "--eval_problems_per_level", "2", "--eval_samples", "2", "--eval_max_new_tokens", "24",
        "--disable_tqdm", "true"]  # fmt: skip


def run(output_dir):
    command = [sys.executable, "-m", "ponder.training.cli", "pipeline", "recipes/toy", "--output_dir", str(output_dir)]
    return subprocess.run(command + TINY, capture_output=True, text=True, check=True).stdout


def test_pipeline_runs_then_resumes(tmp_path):
    first = run(tmp_path)
    assert "[1/1] policy: " in first and "policy pass@1 per level: L1" in first
    marker = json.loads((tmp_path / "policy" / "stage_complete.json").read_text())
    assert marker["seconds"] > 0 and "ponder.training.policy" in marker["command"]
    assert (tmp_path / "policy" / "eval.json").exists()

    second = run(tmp_path)
    assert "policy: complete, skipped" in second


def test_missing_recipe_folder_is_named(tmp_path):
    command = [sys.executable, "-m", "ponder.training.cli", "pipeline", str(tmp_path / "nope")]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode != 0 and "nope is not a folder" in result.stderr
