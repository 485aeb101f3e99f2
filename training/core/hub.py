"""Hub uploads of checkpoint folders (with a model card) and saved datasets (with a dataset card).

A checkpoint push writes the model card (``README.md``, `ponder.training.reporting.cards`) into the folder and uploads
an allow-list of files: safetensors weights, configs, tokenizer files, ``ponder.json``, the recipe, eval results,
PNG plots and the card. Optimizer, scheduler and RNG states, ``training_args.bin`` (the Trainer's pickled
arguments), DeepSpeed ``global_step*`` and ``checkpoint-*`` folders are never uploaded, and a push stops before
contacting the Hub if a file it would upload holds a Hugging Face token. The token is huggingface_hub's business
(``HF_TOKEN`` or ``hf auth login``; a training run may pass its ``hub_token``); ponder never writes it to a file or
prints it (`ponder.training.core.configs.redacted`).
"""

from __future__ import annotations

import math
import re
import shutil
import tempfile
from pathlib import Path

from huggingface_hub import CommitInfo, HfApi
from huggingface_hub.constants import REPOCARD_NAME
from huggingface_hub.utils import filter_repo_objects

from ponder.inference.verifiers import METADATA_FILE
from ponder.training.core.outputs import RECIPE_FILE, write_text_atomic
from ponder.training.reporting.cards import DEFAULT_LICENSE, EVAL_FILES, STATS_FILE, dataset_card, model_card, read_json

CHECKPOINT_FILES = [
    "*.safetensors", "*.safetensors.index.json",  # weights: the model, and a LoRA run's adapter/
    "*config.json",  # model, generation, adapter and tokenizer configs
    "tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "merges.txt", "special_tokens_map.json",
    "added_tokens.json", "chat_template.jinja", "chat_template.json",
    METADATA_FILE, RECIPE_FILE, *EVAL_FILES, "*.png", REPOCARD_NAME,
]  # fmt: skip
NEVER_UPLOADED = [
    "checkpoint-*", "global_step*", "*/global_step*",  # Trainer checkpoints and DeepSpeed states
    "*optimizer*", "*scheduler*", "*rng_state*", "training_args.bin", ".*", "*/.*",
]  # fmt: skip
TOKEN_PATTERN = re.compile(rb"hf_[A-Za-z0-9]{30,}")
MAX_PARQUET_SHARD_BYTES = 500 * 2**20


def refuse_tokens(folder: Path, files: list[str]) -> None:
    """Raise if a file that is about to be uploaded holds something shaped like a Hugging Face token."""
    for name in files:
        if not name.endswith(".safetensors") and TOKEN_PATTERN.search((folder / name).read_bytes()):
            raise ValueError(f"{folder / name} holds a Hugging Face token; remove it before pushing")


def upload(
    folder: Path,
    repo_id: str,
    repo_type: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str,
    token: str | None = None,
    allow_patterns: list[str] | None = None,
    ignore_patterns: list[str] | None = None,
) -> CommitInfo:
    """Create the repository (and the branch `revision`) when missing, then upload the selected files of `folder`."""
    files = [path.relative_to(folder).as_posix() for path in sorted(folder.rglob("*")) if path.is_file()]
    refuse_tokens(
        folder, list(filter_repo_objects(files, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns))
    )
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True).repo_id
    if revision not in (None, "main"):
        api.create_branch(repo_id, repo_type=repo_type, branch=revision, exist_ok=True)
    return api.upload_folder(
        repo_id=repo_id,
        repo_type=repo_type,
        folder_path=folder,
        allow_patterns=allow_patterns,
        ignore_patterns=ignore_patterns,
        revision=revision,
        create_pr=create_pr,
        commit_message=commit_message,
    )


def push_checkpoint(
    folder: str | Path, repo_id: str, *, license: str = DEFAULT_LICENSE, commit_message: str | None = None, **options
) -> CommitInfo:
    """Write the model card into the checkpoint `folder`, then upload the folder's checkpoint files to `repo_id`."""
    folder = Path(folder)
    if not any(folder.glob("*.safetensors")):
        raise ValueError(f"{folder}: no safetensors weights to push")
    card = model_card(folder, repo_id, license)
    write_text_atomic(folder / REPOCARD_NAME, str(card))
    kind = read_json(folder / METADATA_FILE)["kind"]
    return upload(
        folder,
        repo_id,
        "model",
        commit_message=commit_message or f"Upload ponder {kind} checkpoint",
        allow_patterns=CHECKPOINT_FILES,
        ignore_patterns=NEVER_UPLOADED,
        **options,
    )


def saved_dataset_dir(folder: Path) -> Path | None:
    """`folder` or `folder/dataset` when it holds a dataset saved with `save_to_disk`, else None."""
    for candidate in (folder, folder / "dataset"):
        if (candidate / "state.json").exists() or (candidate / "dataset_dict.json").exists():
            return candidate
    return None


def write_parquet(rows, folder: Path, split: str) -> None:
    """`rows` as ``{split}-00000-of-0000N.parquet`` shards of at most about `MAX_PARQUET_SHARD_BYTES` each."""
    folder.mkdir(parents=True, exist_ok=True)
    count = max(1, math.ceil(rows.data.nbytes / MAX_PARQUET_SHARD_BYTES))
    for index in range(count):
        shard = rows.shard(count, index, contiguous=True)
        shard.to_parquet(str(folder / f"{split}-{index:05d}-of-{count:05d}.parquet"))


def push_dataset(
    folder: str | Path, repo_id: str, *, license: str = DEFAULT_LICENSE, commit_message: str | None = None, **options
) -> CommitInfo:
    """Push a stage's saved rows (label or trajectory folder) as a Hub dataset: parquet, `stats.json` and a card."""
    from datasets import DatasetDict, load_from_disk

    data_dir = saved_dataset_dir(Path(folder))
    if data_dir is None:
        raise ValueError(f"{folder}: no dataset saved with `save_to_disk` here or in {Path(folder) / 'dataset'}")
    loaded = load_from_disk(str(data_dir))
    splits = dict(loaded) if isinstance(loaded, DatasetDict) else {"train": loaded}
    stats_path = data_dir.parent / STATS_FILE
    columns = next(iter(splits.values())).column_names
    split_rows = {name: rows.num_rows for name, rows in splits.items()}
    card = dataset_card(repo_id, split_rows, columns, read_json(stats_path), license)
    with tempfile.TemporaryDirectory() as staging:
        staging = Path(staging)
        for name, rows in splits.items():
            write_parquet(rows, staging / "data", name)
        card.save(staging / REPOCARD_NAME)
        if stats_path.exists():
            shutil.copy(stats_path, staging / STATS_FILE)
        return upload(staging, repo_id, "dataset", commit_message=commit_message or "Upload ponder dataset", **options)
