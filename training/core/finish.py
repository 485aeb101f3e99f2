"""How every training stage starts and ends: resuming, saving, the training record, judging, the Hub push.

`train` resumes from ``--resume_from_checkpoint`` or else from the newest complete ``checkpoint-N`` in the
output folder. `finish` saves on every process (ZeRO-3 gathers the weights there), then switches ZeRO-3 off:
transformers reads it from a process-wide setting (`is_deepspeed_zero3_enabled`) and would otherwise partition
every model loaded afterwards across processes that no longer load it with it. The main process alone then
merges a LoRA adapter, writes the metadata and the record, judges the saved checkpoint and pushes it, while
the others wait for it on a CPU (gloo) group whose timeout allows for long judging; then all of them leave
the process group together.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import torch
from transformers import TrainerState
from transformers.integrations.deepspeed import unset_hf_deepspeed_config
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import sort_checkpoints

from ponder.training.core.fingerprint import FINGERPRINT_FILE, fingerprint_mismatch, read_fingerprint
from ponder.training.core.lora import ADAPTER_DIR, LoraSettings, merge_adapter
from ponder.training.core.outputs import write_checkpoint_metadata, write_json_atomic

logger = logging.getLogger(__name__)

JUDGING_TIMEOUT = timedelta(days=1)  # how long the other processes wait for the main one to finish
TRAIN_FRESH = (
    "to train from scratch, use a new output_dir or remove its checkpoint-* folders; to resume one of them anyway, "
    "pass --resume_from_checkpoint"
)


def last_checkpoint(args) -> str | None:
    """`args.resume_from_checkpoint`, else the newest ``checkpoint-N`` of `args.output_dir` that was saved whole."""
    if args.resume_from_checkpoint:
        return args.resume_from_checkpoint
    if not Path(args.output_dir).is_dir():
        return None
    # the Trainer writes trainer_state.json last: a checkpoint without it was cut off while saving
    complete = [c for c in sort_checkpoints(args.output_dir) if (Path(c) / TRAINER_STATE_NAME).exists()]
    return complete[-1] if complete else None


def train(trainer, fingerprint: dict):
    """`trainer.train()`, resumed from `last_checkpoint`; its metrics also name that checkpoint (``resumed_from``)
    and its step (``mean_train_loss_from_step``).

    A checkpoint found in the output folder is resumed only when the folder's ``fingerprint.json`` is this
    run's `fingerprint` (`training_fingerprint`): other settings, data or base model are refused, naming
    what differs. An explicit ``--resume_from_checkpoint`` is taken as it is.
    """
    args = trainer.args
    output_dir = Path(args.output_dir)
    checkpoint = last_checkpoint(args)
    if checkpoint and not args.resume_from_checkpoint:
        recorded = read_fingerprint(output_dir)
        if recorded != fingerprint:
            raise fingerprint_mismatch(output_dir, recorded, fingerprint, TRAIN_FRESH)
    if trainer.is_world_process_zero():
        write_json_atomic(output_dir / FINGERPRINT_FILE, fingerprint)
    resumed_step = 0
    if checkpoint:
        logger.info("resuming from %s", checkpoint)
        # read now: with save_total_limit the Trainer deletes this checkpoint once it saves a newer one
        resumed_step = TrainerState.load_from_json(str(Path(checkpoint) / TRAINER_STATE_NAME)).global_step
    result = trainer.train(resume_from_checkpoint=checkpoint)
    result.metrics["resumed_from"] = checkpoint
    result.metrics["mean_train_loss_from_step"] = resumed_step
    return result


def distributed_setup(accelerator) -> dict:
    """How the run was spread: process count, accelerate's distributed type and the ZeRO stage if any."""
    plugin = accelerator.state.deepspeed_plugin
    return {
        "processes": accelerator.num_processes,
        "type": accelerator.distributed_type.value,
        "zero_stage": plugin.zero_stage if plugin is not None else None,
    }


def training_record(trainer, result) -> dict:
    """Steps, seconds and mean loss of this run's training, the rest of `result.metrics`, and the process setup.

    A resumed run's seconds, mean loss (and TRL's token count, entropy and accuracy) cover the steps after
    ``mean_train_loss_from_step`` only.
    """
    metrics = dict(result.metrics)
    return {
        "steps": result.global_step,
        "train_seconds": round(metrics.pop("train_runtime"), 1),
        "mean_train_loss": metrics.pop("train_loss"),
        "mean_train_loss_from_step": metrics.pop("mean_train_loss_from_step"),
        **metrics,
        "distributed": distributed_setup(trainer.accelerator),
    }


def finish(
    trainer,
    result,
    hub_push,
    record_file: str,
    *,
    lora: LoraSettings | None = None,
    load_base: Callable | None = None,
    training: dict | None = None,
    results: dict | None = None,
    judge: Callable[[Path], dict] | None = None,
) -> dict:
    """Save the trained model as a checkpoint that loads without peft or DeepSpeed, record, judge and push it.

    A LoRA run (`lora.use_peft`) keeps its adapter in ``adapter/`` and the merged model (onto `load_base()`) at
    the top. Beside it: the tokenizer, ``ponder.json`` and the recipe (`hub_push`'s metadata and configs), and
    `record_file` with ``training`` (`training_record` and the stage's `training` figures), `results`, and what
    `judge(checkpoint)` reports. Returns the record on the main process and {} on the others.
    """
    output_dir = Path(trainer.args.output_dir)
    peft_run = lora is not None and lora.use_peft
    trainer.save_model(str(output_dir / ADAPTER_DIR) if peft_run else str(output_dir))
    trainer.accelerator.wait_for_everyone()
    unset_hf_deepspeed_config()
    distributed = torch.distributed.is_initialized()
    waiting = torch.distributed.new_group(backend="gloo", timeout=JUDGING_TIMEOUT) if distributed else None
    try:
        if not trainer.is_world_process_zero():
            return {}
        if peft_run:
            merge_adapter(load_base(), output_dir)
        trainer.processing_class.save_pretrained(output_dir)
        write_checkpoint_metadata(output_dir, hub_push.metadata, *hub_push.configs)
        record = {"training": training_record(trainer, result) | (training or {}), **(results or {})}
        if judge is not None:
            record |= judge(output_dir)
        write_json_atomic(output_dir / record_file, record)
        hub_push.push_final(output_dir)
        return record
    finally:
        if distributed:
            torch.distributed.barrier(group=waiting)
            trainer.accelerator.end_training()


def judge_only(judge: Callable[[Path], dict], checkpoint: str | Path, output_dir: str | Path, record_file: str) -> dict:
    """Judge an existing checkpoint without training and write the report to `output_dir`/`record_file`."""
    record = judge(Path(checkpoint))
    write_json_atomic(Path(output_dir) / record_file, record)
    return record
