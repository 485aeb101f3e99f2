"""LoRA through peft: the recipe keys every fine-tuning stage shares, wrapping, merging for release, and
the train-then-save tail of every fine-tuning stage."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ponder.training.outputs import write_checkpoint_metadata

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


def train_and_save(
    trainer, tokenizer, settings: LoraSettings, load_base: Callable, metadata: dict, *configs, evaluate: bool
) -> tuple | None:
    """Train, evaluate when `evaluate`, and save a checkpoint that loads without peft.

    A LoRA run keeps its adapter in ``adapter/`` and the merged model (onto `load_base()`) at the top;
    the tokenizer, ``ponder.json`` (`metadata`) and the recipe (`configs`) go beside it. Returns
    (train output, train seconds, eval metrics) on the main process and None on the others.
    """
    start = time.monotonic()
    result = trainer.train()
    train_seconds = time.monotonic() - start
    metrics = trainer.evaluate() if evaluate else {}
    output_dir = Path(trainer.args.output_dir)
    trainer.save_model(str(output_dir / ADAPTER_DIR) if settings.use_peft else str(output_dir))
    trainer.accelerator.wait_for_everyone()
    if not trainer.is_world_process_zero():
        return None
    if settings.use_peft:
        merge_adapter(load_base(), output_dir)
    tokenizer.save_pretrained(output_dir)
    write_checkpoint_metadata(output_dir, metadata, *configs)
    return result, train_seconds, metrics
