"""Recipe parsing: YAML defaults, command-line overrides, unknown keys named."""

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ponder.training.configs import ConfigError, parse_config


@dataclass
class StageConfig:
    task: str = "arith"
    levels: list[int] = field(default_factory=lambda: [1, 2])
    temperature: float = 0.8


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


def test_shipped_policy_recipe_parses():
    from transformers import TrainingArguments

    from ponder.training.policy import PolicyConfig

    config, args = parse_config((PolicyConfig, TrainingArguments), ["--config", "recipes/toy/policy.yaml"])
    assert config.levels == [1, 2, 3, 4, 5, 6] and args.per_device_train_batch_size == 32


def stage_dataclasses(stage: str) -> tuple:
    """The dataclasses a stage's `main` parses its recipe into."""
    from transformers import TrainingArguments
    from trl import SFTConfig

    from ponder.training.evaluate import EvaluateConfig
    from ponder.training.labels import LabelConfig
    from ponder.training.policy import PolicyConfig
    from ponder.training.prm import VerifierConfig
    from ponder.training.revision import RevisionConfig
    from ponder.training.revision_samples import RevisionSamplesConfig
    from ponder.training.revisions import RevisionsConfig

    return {
        "policy": (PolicyConfig, TrainingArguments),
        "label": (LabelConfig,),
        "prm": (VerifierConfig, TrainingArguments),
        "orm": (VerifierConfig, TrainingArguments),
        "revisions": (RevisionsConfig,),
        "revision": (RevisionConfig, SFTConfig),
        "revision_samples": (RevisionSamplesConfig,),
        "evaluate": (EvaluateConfig,),
    }[stage]


RECIPES = sorted(p for p in Path("recipes").glob("*/*.yaml") if p.stem != "accelerate")


@pytest.mark.parametrize("recipe", RECIPES, ids=[f"{p.parent.name}/{p.stem}" for p in RECIPES])
def test_every_shipped_recipe_parses_into_its_stage(recipe):
    import torch

    gpu_only = ["--bf16", "false"] if "bf16: true" in recipe.read_text() and not torch.cuda.is_available() else []
    stage = recipe.stem.split("-")[0]  # a variant of a stage is named STAGE-VARIANT.yaml
    configs = parse_config(stage_dataclasses(stage), ["--config", str(recipe), *gpu_only])  # bf16 needs a GPU
    assert configs[-1].output_dir.startswith(f"outputs/{recipe.parent.name}/")
