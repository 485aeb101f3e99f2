"""LoRA through peft: the recipe keys every fine-tuning stage shares, wrapping, and merging for release."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

ADAPTER_DIR = "adapter"


@dataclass
class LoraSettings:
    """Recipe keys of a LoRA run (`use_peft: true`); `all-linear` targets every linear layer but the head."""

    use_peft: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"])


def with_lora(model, settings: LoraSettings, task_type: str, modules_to_save: list[str] | None = None):
    """`model` wrapped with fresh LoRA adapters; `task_type` is a peft `TaskType` name (e.g. "CAUSAL_LM")."""
    from peft import LoraConfig, TaskType, get_peft_model

    targets = settings.lora_target_modules
    lora = LoraConfig(
        task_type=TaskType[task_type],
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=targets[0] if targets == ["all-linear"] else targets,
        modules_to_save=modules_to_save,
    )
    return get_peft_model(model, lora)


def merge_adapter(base_model, output_dir: Path) -> None:
    """Load the adapter saved in `output_dir/adapter` onto `base_model`, merge, and save at `output_dir`."""
    from peft import PeftModel

    merged = PeftModel.from_pretrained(base_model, Path(output_dir) / ADAPTER_DIR).merge_and_unload()
    merged.save_pretrained(output_dir)
