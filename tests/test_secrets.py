"""A Hub token reaches the Hub's requests only: no output file, recorded command, saved config or log holds it."""

import json
import subprocess
import sys
import threading
from dataclasses import dataclass

import pytest
import yaml
from test_hub import LocalHub

from ponder.training.core.configs import config_to_dict, redact_command

PLANTED = "hf_PLANTEDsecret123"


@pytest.fixture
def local_hub(monkeypatch):
    """A `LocalHub` that child processes reach through HF_ENDPOINT, with no token of huggingface_hub's own."""
    server = LocalHub(lfs_suffixes=(".safetensors",))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    yield server
    server.shutdown()
    server.server_close()


def test_commands_show_a_secret_flag_redacted():
    command = ["python", "-m", "ponder.training.prm", "--hub_token", PLANTED, "--hub-token", PLANTED]
    assert redact_command([*command, f"--hub_token={PLANTED}", "--seed", "0"]) == [
        *command[:3],
        *["--hub_token", "<HUB_TOKEN>", "--hub-token", "<HUB_TOKEN>", "--hub_token=<HUB_TOKEN>", "--seed", "0"],
    ]


@pytest.mark.parametrize("typo", [["--hub_tokn", PLANTED], [f"--hub-tokn={PLANTED}"]])
def test_a_mistyped_secret_flag_is_named_without_its_value(typo):
    from ponder.training.core.configs import ConfigError, parse_config
    from ponder.training.labels import LabelConfig

    with pytest.raises(ConfigError, match="unknown command-line argument") as refused:
        parse_config((LabelConfig,), ["--policy", "p", "--task", "arith", *typo])
    assert typo[0].partition("=")[0] in str(refused.value) and PLANTED not in str(refused.value)


def test_a_folder_lock_names_its_holder_without_the_secret(tmp_path, monkeypatch):
    from ponder.training.core.locks import FolderLock

    monkeypatch.setattr(sys, "argv", ["ponder", "label", "--hub_token", PLANTED])
    lock = FolderLock(tmp_path, "lock")
    lock.acquire()
    held = "".join(path.read_text() for path in tmp_path.iterdir())
    lock.release()
    assert "--hub_token <HUB_TOKEN>" in held and PLANTED not in held


def test_a_recorded_config_holds_a_placeholder_for_a_secret():
    @dataclass
    class PushConfig:
        hub_token: str | None = None
        hub_model_id: str = "org/model"

    assert config_to_dict(PushConfig(PLANTED)) == {"hub_token": "<HUB_TOKEN>", "hub_model_id": "org/model"}
    assert config_to_dict(PushConfig()) == {"hub_token": None, "hub_model_id": "org/model"}


def test_a_token_set_through_the_pipeline_reaches_the_pushes_and_nothing_else(tiny_model, local_hub, tmp_path):
    rows = [
        {"problem_id": f"p{i}", "prompt": f"000{i}+0001", "completions": [f"000{i}+0001=000{i + 1}"], "labels": [1.0]}
        for i in range(4)
    ]
    dataset = tmp_path / "labels.jsonl"
    dataset.write_text("".join(json.dumps(row) + "\n" for row in rows))
    recipe = {
        "dataset": str(dataset),
        "model_name_or_path": str(tiny_model),
        "task": "arith",
        "eval_fraction": 0.0,
        "max_steps": 2,
        "per_device_train_batch_size": 4,
        "save_strategy": "steps",
        "save_steps": 1,
        "report_to": "none",
        "disable_tqdm": True,
        "push_to_hub": True,
        "hub_model_id": "org/toy-prm",
    }
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "prm.yaml").write_text(yaml.safe_dump(recipe))
    output = tmp_path / "out"
    command = [sys.executable, "-m", "ponder.training.cli", "pipeline", str(tmp_path / "recipes")]
    command += ["--output_dir", str(output), "--set", f"prm.hub_token={PLANTED}"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr

    assert PLANTED not in result.stdout + result.stderr
    written = [path for path in output.rglob("*") if path.is_file()]
    assert {"training_args.bin", "recipe.yaml", "stage_complete.json"} <= {path.name for path in written}
    assert [path for path in written if PLANTED.encode() in path.read_bytes()] == []
    recorded = json.loads((output / "prm" / "stage_complete.json").read_text())
    assert "--hub_token" not in recorded["command"] and recorded["environment"] == {}  # HF_TOKEN, never recorded

    refs = local_hub.repos[("model", "org/toy-prm")]
    assert {"main", "checkpoint-1", "checkpoint-2"} <= set(refs)
    assert all(PLANTED.encode() not in content for files in refs.values() for content in files.values())
    writes = [auth for method, _, auth in local_hub.requests if method == "POST"]
    assert writes and all(auth == f"Bearer {PLANTED}" for auth in writes)  # the pushes still had the token
