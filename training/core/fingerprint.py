"""What made an output: a stage's fingerprint, recorded beside its outputs as ``fingerprint.json``.

A fingerprint holds everything a stage's results depend on, so that a rerun resumes finished work
only when it would compute the same:

- the config as `config_to_dict` records it, without the keys that say where results go or how the
  work is split between jobs (`OUTPUT_KEYS`) and without the keys a stage names as changing no
  finished work (evaluate's `CHANGEABLE_KEYS`);
- of the engine, the settings that change what is sampled (`ENGINE_RESULT_KEYS`): the backend as
  it resolves on this machine (each has its own sampler and random streams), the dtype,
  ``max_model_len`` and ``sampling_seeds``; settings of speed and memory alone (GPU share, tensor
  parallelism, eager mode, prefix caching, attention kernel) are left out;
- in place of each checkpoint path the checkpoint's identity (`checkpoint_identity`), and in place
  of each input path the hashes of its contents (`input_identity`); a Hub id, or a value such as
  ``oracle``, stays as it is.

A moved checkpoint or problems file keeps its fingerprint; one edited in place changes it.
"""

from __future__ import annotations

import hashlib
import json
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from ponder.inference.verifiers import METADATA_FILE
from ponder.training.core.configs import ConfigError, config_to_dict

FINGERPRINT_FILE = "fingerprint.json"
OUTPUT_KEYS = ("output_dir", "overwrite_output_dir", "push_to_hub", "hub_dataset_id", "shard_index", "num_shards")
ENGINE_RESULT_KEYS = ("backend", "dtype", "max_model_len", "sampling_seeds")
CHECKPOINT_FILES = (  # what loading a checkpoint folder reads; training records beside them are left out
    "config.json",
    "generation_config.json",
    METADATA_FILE,
    "adapter_config.json",
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template*",
    "vocab*",
    "merges.txt",
    "*.safetensors",
    "*.safetensors.index.json",
    "pytorch_model*.bin",
    "adapter_model.bin",
)
WEIGHT_SUFFIXES = (".safetensors", ".bin")
BLOCK = 1 << 20
START_FRESH = (
    "to start fresh, use a new output_dir, or pass --overwrite_output_dir to remove these outputs "
    "and compute them again"
)


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def weights_identity(path: Path) -> dict:
    """A weights file's size and the sha256 of its safetensors header and of 1 MiB blocks at its start,
    middle and end: multi-GB weights are told apart without reading them whole."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        if path.suffix == ".safetensors" and size >= 8:
            header_size = int.from_bytes(f.read(8), "little")
            digest.update(f.read(min(header_size, size - 8)))
        for offset in sorted({0, max(0, (size - BLOCK) // 2), max(0, size - BLOCK)}):
            f.seek(offset)
            digest.update(f.read(BLOCK))
    return {"bytes": size, "sampled_sha256": digest.hexdigest()}


def checkpoint_identity(source: str | None) -> Any:
    """A checkpoint folder's identity: per file that loading reads (`CHECKPOINT_FILES`), its sha256, or
    `weights_identity` for weights; anything but a local folder (a Hub id, ``oracle``) as it is."""
    if source is None or not Path(source).is_dir():
        return source
    files = sorted(
        p for p in Path(source).iterdir() if p.is_file() and any(fnmatch(p.name, f) for f in CHECKPOINT_FILES)
    )
    return {p.name: weights_identity(p) if p.suffix in WEIGHT_SUFFIXES else file_sha256(p) for p in files}


def input_identity(source: str | None) -> Any:
    """An input's contents: a file's sha256, or a folder's per file (every file, by relative path);
    anything but a local path (a Hub dataset id) as it is."""
    if source is None:
        return None
    path = Path(source)
    if path.is_file():
        return file_sha256(path)
    if path.is_dir():
        return {p.relative_to(path).as_posix(): file_sha256(p) for p in sorted(path.rglob("*")) if p.is_file()}
    return source


def identity_digest(identity: Any) -> str:
    """A short digest of an identity (`checkpoint_identity`), to name an output that depends on it."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]


def stage_fingerprint(
    config: Any, engine: Any, checkpoints: tuple[str, ...], inputs: tuple[str, ...], ignored: tuple[str, ...] = ()
) -> dict:
    """The fingerprint of a stage run with `config` and `engine` (module docstring); `checkpoints` and
    `inputs` name the keys holding checkpoint and input paths, `ignored` the stage's keys that change no
    finished work."""
    record = _identified(config_to_dict(config), (*OUTPUT_KEYS, *ignored), checkpoints, inputs)
    record |= {key: getattr(engine, key) for key in ENGINE_RESULT_KEYS}
    record["backend"] = "vllm" if engine.uses_vllm() else "hf"
    return {"stage": type(config).__name__, **record}


def _identified(record: dict, left_out: tuple[str, ...], checkpoints: tuple[str, ...], inputs: tuple[str, ...]):
    """`record` without the keys `left_out`, the paths under `checkpoints` and `inputs` replaced by their
    identities (`checkpoint_identity`, `input_identity`)."""
    record = {key: value for key, value in record.items() if key not in left_out}
    return (
        record
        | {key: checkpoint_identity(record[key]) for key in checkpoints}
        | {key: input_identity(record[key]) for key in inputs}
    )


TRAINING_RECORD_KEYS = (  # TrainingArguments that change where and how often a run reports, not what it trains
    "output_dir",
    "logging_dir",
    "logging_strategy",
    "logging_steps",
    "logging_first_step",
    "report_to",
    "run_name",
    "disable_tqdm",
    "save_strategy",
    "save_steps",
    "save_total_limit",
    "save_only_model",
    "eval_strategy",
    "eval_steps",
    "resume_from_checkpoint",
    "dataloader_num_workers",
    "push_to_hub",
    "hub_model_id",
    "hub_strategy",
    "hub_token",
    "hub_private_repo",
)


def training_fingerprint(config: Any, args: Any, checkpoints: tuple[str, ...], inputs: tuple[str, ...]) -> dict:
    """The fingerprint of a training run: the stage's `config` and its TrainingArguments `args` without the
    keys of where and how often it reports (`TRAINING_RECORD_KEYS`), the identity of each checkpoint the
    keys `checkpoints` name (the base model) and the contents of each input `inputs` name (the dataset)."""
    record = _identified(config_to_dict(config), OUTPUT_KEYS, checkpoints, inputs)
    record |= _identified(config_to_dict(args), TRAINING_RECORD_KEYS, (), ())
    return {"stage": type(config).__name__, **record}


def read_fingerprint(folder: Path) -> dict | None:
    path = folder / FINGERPRINT_FILE
    return json.loads(path.read_text()) if path.exists() else None


def differences(old: Any, new: Any, where: str = "") -> list[str]:
    """``key: old → new`` for every value that differs, nested keys joined by ``/``."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = dict.fromkeys([*old, *new])
        return [line for key in keys for line in differences(old.get(key), new.get(key), f"{where}{key}/")]
    return [] if old == new else [f"{where.rstrip('/')}: {_shown(old)} → {_shown(new)}"]


def _shown(value: Any) -> str:
    """`value` as JSON, cut short (a hash to its first characters)."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:20] + "…"


def fingerprint_mismatch(
    folder: Path, recorded: dict | None, fingerprint: dict, start_fresh: str = START_FRESH
) -> ConfigError:
    """The error of a run into `folder` whose outputs `recorded` made (None: unknown), naming what differs."""
    if recorded is None:
        return ConfigError(
            f"{folder} holds outputs but no {FINGERPRINT_FILE} (an older version of ponder wrote them), so what "
            f"made them is unknown; {start_fresh}"
        )
    changed = "\n  ".join(differences(recorded, fingerprint))
    return ConfigError(
        f"{folder} holds outputs made with other settings or inputs (recorded → this run):\n  {changed}\n"
        f"rerun with the recorded ones to resume them; {start_fresh}"
    )
