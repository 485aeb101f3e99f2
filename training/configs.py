"""Recipe parsing: dataclasses filled from a YAML file (``--config``) and ``--key value`` overrides.

Unknown keys are errors that name the key, in the YAML file and on the command line alike.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser


class ConfigError(ValueError):
    """A recipe or command line that does not fit the stage's dataclasses."""


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a recipe file; it must hold a mapping of keys to values."""
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of keys to values, got {type(data).__name__}")
    return data


def parse_config(dataclass_types: tuple[type, ...], args: list[str] | None = None) -> tuple:
    """Fill `dataclass_types` from ``--config FILE`` (optional) and ``--key value`` flags.

    The YAML values become the parser's defaults and flags override them, as in TRL's `TrlParser`.
    """
    parser = HfArgumentParser(dataclass_types)
    parser.add_argument("--config", default=None, help="YAML recipe whose keys fill the configuration")
    known_fields = {field.name for cls in dataclass_types for field in dataclasses.fields(cls)}
    pre_args, _ = parser.parse_known_args(args)
    if pre_args.config is not None:
        recipe = load_yaml(pre_args.config)
        unknown = sorted(set(recipe) - known_fields)
        if unknown:
            raise ConfigError(f"{pre_args.config}: unknown key(s) {', '.join(map(repr, unknown))}")
        for action in parser._actions:
            if action.dest in recipe:
                action.default = recipe[action.dest]
                action.required = False
    *configs, remaining = parser.parse_args_into_dataclasses(args=args, return_remaining_strings=True)
    if remaining:
        raise ConfigError(f"unknown command-line argument(s): {' '.join(remaining)}")
    return tuple(config for config in configs if not isinstance(config, type(pre_args)))


def config_to_dict(*configs: Any) -> dict[str, Any]:
    """A JSON-safe record of the configuration that produced an output."""
    record: dict[str, Any] = {}
    for config in configs:
        values = config.to_dict() if hasattr(config, "to_dict") else dataclasses.asdict(config)
        record.update(json.loads(json.dumps(values, default=str)))
    return record
