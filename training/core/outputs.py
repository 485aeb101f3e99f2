"""Writing stage outputs: atomic JSON/YAML files and the `ponder.json` checkpoint metadata."""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

import yaml

from ponder.inference.verifiers import METADATA_FILE
from ponder.training.core.configs import config_to_dict

RECIPE_FILE = "recipe.yaml"


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o644)  # mkstemp creates 0600; outputs are ordinary readable files
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_json_once(path: str | os.PathLike, data: Any) -> bool:
    """Write `data` to `path` atomically unless `path` exists (an exclusive create); True when this call wrote it."""
    path = Path(path)
    claim = path.with_name(f".{path.name}.{uuid.uuid4().hex}.claim")
    write_json_atomic(claim, data)
    try:
        os.link(claim, path)  # fails where `path` exists, even when another process wrote it a moment ago
    except FileExistsError:
        return False
    finally:
        claim.unlink()
    return True


def write_recipe(output_dir: str | os.PathLike, *configs: Any) -> None:
    """Write `recipe.yaml`: the configuration that made the checkpoint."""
    write_text_atomic(Path(output_dir) / RECIPE_FILE, yaml.safe_dump(config_to_dict(*configs), sort_keys=True))


def write_checkpoint_metadata(output_dir: str | os.PathLike, metadata: dict, *configs: Any) -> None:
    """Write `ponder.json` (how to use the checkpoint) and `recipe.yaml` (the config that made it)."""
    write_json_atomic(Path(output_dir) / METADATA_FILE, metadata)
    write_recipe(output_dir, *configs)
