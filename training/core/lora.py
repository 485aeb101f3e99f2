"""LoRA through peft: the recipe keys every fine-tuning stage shares, wrapping, and merging for release."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

ADAPTER_DIR = "adapter"


@dataclass
class LoraSettings:
    """Recipe keys of a LoRA run (`use_peft: true`); `all-linear` targets every linear layer but the head."""

    use_peft: bool = field(
        default=False,
        metadata={"help": "train LoRA adapters (peft) instead of every weight; the saved checkpoint is merged"},
    )
    lora_r: int = field(default=16, metadata={"help": "rank of each LoRA adapter"})
    lora_alpha: int = field(
        default=32, metadata={"help": "LoRA scale: adapter updates are multiplied by lora_alpha / lora_r"}
    )
    lora_dropout: float = field(default=0.0, metadata={"help": "dropout probability on the input of each LoRA adapter"})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["all-linear"],
        metadata={"help": "module names to adapt; 'all-linear' adapts every linear layer but the output head"},
    )


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
