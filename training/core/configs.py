"""Recipe parsing: dataclasses filled from a YAML file (``--config``) and ``--key value`` overrides.

`RecipeParser` is TRL's `TrlParser` with strict recipes: a recipe key must be a field of the stage's
dataclasses, given once, with a value its command-line flag would accept; anything else is a
`ConfigError` that names the key. TRL's ``env:`` section is not a field, so it is refused too.
Secrets (`SECRET_KEYS`) are recorded as placeholders wherever a configuration or command is written down.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from trl import TrlParser

SECRET_KEYS = ("hub_token",)


class ConfigError(ValueError):
    """A recipe or command line that does not fit the stage's dataclasses."""


class _RecipeLoader(yaml.SafeLoader):
    """A `SafeLoader` that refuses a key given twice in one mapping."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    mark = key_node.start_mark
                    raise ConfigError(f"{mark.name}: key {key_node.value!r} given twice (line {mark.line + 1})")
                seen.add(key_node.value)
        return super().construct_mapping(node, deep)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a recipe file; it must hold a non-empty mapping of keys to values, each key once."""
    with open(path) as f:
        data = yaml.load(f, Loader=_RecipeLoader)
    if data is None:
        raise ConfigError(f"{path}: the recipe is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of keys to values, got {type(data).__name__}")
    return data


def require(config: Any, *keys: str) -> None:
    """Raise `ConfigError` naming every one of `keys` that `config` leaves unset."""
    missing = [key for key in keys if getattr(config, key) in (None, "")]
    if missing:
        raise ConfigError(f"missing required key(s) {', '.join(missing)}: set them in the recipe or as --KEY VALUE")


def checkpoint_path(key: str, path: str) -> str:
    """`path` when it is a folder or a valid Hub id; else a `ConfigError` naming `key` and `path`."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not Path(path).is_dir():
        try:
            validate_repo_id(path)
        except HFValidationError:
            raise ConfigError(f"{key}: {path!r} is neither a folder nor a valid Hub id") from None
    return path


def _members(hint) -> tuple:
    """The alternatives of a union type hint, or the hint alone."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    return typing.get_args(hint) if union else (hint,)


def _accepts(hint, kind: type) -> bool:
    """Whether a value of `kind` (a container class or ``NoneType``) fits `hint`."""
    return any(member is kind or typing.get_origin(member) is kind for member in _members(hint))


def _type_name(hint) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


class RecipeParser(TrlParser):
    """`TrlParser` whose recipe values pass the same checks as command-line values."""

    def __init__(self, dataclass_types):
        super().__init__(dataclass_types)
        self.add_argument("--config", metavar="FILE", help="YAML recipe whose keys fill the configuration")
        self.hints = {}
        for dataclass_type in self.dataclass_types:
            hints = typing.get_type_hints(dataclass_type)
            self.hints.update({f.name: hints[f.name] for f in dataclasses.fields(dataclass_type) if f.init})
        self.flags = {}
        for action in self._actions:
            self.flags.setdefault(action.dest, action)  # a `--no_KEY` flag shares the dest of `--KEY`
        self.recipe_path = None

    def parse_args_and_config(self, args=None, **kwargs):
        """Check the file ``--config`` names (a mapping of known keys, each once), then parse as TRL does."""
        finder = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
        finder.add_argument("--config")
        found, rest = finder.parse_known_args(sys.argv[1:] if args is None else list(args))
        if found.config is not None:
            self.recipe_path = found.config
            unknown = sorted(set(load_yaml(found.config)) - set(self.hints), key=str)
            if unknown:
                raise ConfigError(f"{found.config}: unknown key(s) {', '.join(map(repr, unknown))}")
            rest = ["--config", found.config, *rest]
        return super().parse_args_and_config(rest, **kwargs)

    def set_defaults_with_config(self, **recipe) -> list[str]:
        """Recipe values become the defaults, each parsed as its flag's value would be."""
        return super().set_defaults_with_config(**{key: self.parsed(key, value) for key, value in recipe.items()})

    def parse_args_into_dataclasses(self, args=None, return_remaining_strings=False, **kwargs):
        """As `HfArgumentParser`'s, without reading flags from a ``.args`` file beside the running script."""
        kwargs["look_for_args_file"] = False
        return super().parse_args_into_dataclasses(args, return_remaining_strings, **kwargs)

    def parsed(self, key: str, value: Any) -> Any:
        """A recipe value checked against the field's type; `ConfigError` naming the key and that type."""
        action, hint = self.flags[key], self.hints[key]
        where, expected = f"{self.recipe_path}: {key!r}", _type_name(hint)
        wrong = ConfigError(f"{where} must be {expected}, got {value!r}")
        if value is None:
            if _accepts(hint, type(None)) or action.default is None:
                return None
            raise wrong
        if isinstance(value, dict):
            if _accepts(hint, dict):
                return value
            raise wrong
        if isinstance(value, list):
            if not _accepts(hint, list):
                raise wrong
            return [_flag_value(action, item, where, expected) for item in value]
        if action.nargs in ("+", "*") and not _accepts(hint, str):  # one value where a list must be
            raise wrong
        return _flag_value(action, value, where, expected)


def _flag_value(action: argparse.Action, value: Any, where: str, expected: str) -> Any:
    """`value` converted by its flag's type and checked against its choices, as on the command line."""
    try:
        parsed = action.type(value if isinstance(value, str) else str(value)) if action.type else value
    except (TypeError, ValueError, argparse.ArgumentTypeError):
        raise ConfigError(f"{where} must be {expected}, got {value!r}") from None
    if action.choices is not None and parsed not in action.choices:
        raise ConfigError(f"{where} must be one of {', '.join(map(str, action.choices))}, got {value!r}")
    return parsed


def parse_config(dataclass_types: tuple[type, ...], args: list[str] | None = None) -> tuple:
    """Fill `dataclass_types` from ``--config FILE`` (optional) and ``--key value`` flags, which override it."""
    *parsed, remaining = RecipeParser(dataclass_types).parse_args_and_config(args, return_remaining_strings=True)
    if remaining:  # named by their flags only: a mistyped secret flag's value must not reach a log
        flags = [argument.partition("=")[0] for argument in remaining if argument.startswith("-")]
        raise ConfigError(f"unknown command-line argument(s): {' '.join(flags) or 'a value without a flag'}")
    return tuple(config for config in parsed if dataclasses.is_dataclass(config))


def config_to_dict(*configs: Any) -> dict[str, Any]:
    """A JSON-safe record of the configuration that produced an output, secrets redacted."""
    record: dict[str, Any] = {}
    for config in configs:
        values = config.to_dict() if hasattr(config, "to_dict") else dataclasses.asdict(config)
        record.update({key: redacted(key, value) for key, value in json.loads(json.dumps(values, default=str)).items()})
    return record


def redacted(key: str, value: Any) -> Any:
    """`value` as a record shows it: a set secret becomes ``<KEY>`` (``<HUB_TOKEN>``, as `TrainingArguments.to_dict`
    writes it)."""
    return f"<{key.upper()}>" if key in SECRET_KEYS and value is not None else value


def redact_command(command: list[str]) -> list[str]:
    """`command` as a record or a log shows it: the value of each secret flag (``--hub_token VALUE`` or
    ``--hub_token=VALUE``) redacted."""
    shown = []
    for index, argument in enumerate(command):
        flag, equals, value = argument.partition("=")
        if equals and _flag_key(flag) in SECRET_KEYS:
            argument = f"{flag}={redacted(_flag_key(flag), value)}"
        elif index and _flag_key(command[index - 1]) in SECRET_KEYS:
            argument = redacted(_flag_key(command[index - 1]), argument)
        shown.append(argument)
    return shown


def _flag_key(argument: str) -> str | None:
    """The key that a ``--key`` (or ``--key-name``) flag sets; None for any other argument."""
    return argument[2:].replace("-", "_") if argument.startswith("--") else None
