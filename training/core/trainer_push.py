"""A training run's `push_to_hub` settings, carried out by ponder's checkpoint push instead of the Trainer's."""

from __future__ import annotations

import copy
from pathlib import Path

from transformers import TrainerCallback, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, HubStrategy

from ponder.training.core.hub import push_checkpoint
from ponder.training.core.outputs import write_checkpoint_metadata


class HubPush(TrainerCallback):
    """A run's `push_to_hub` / `hub_model_id` / `hub_strategy` / `hub_revision`, carried out by ponder.

    The Trainer's own pushes would upload ``training_args.bin`` (and, with the checkpoint strategies, optimizer and
    RNG states) and a card without ``ponder.json``, so the Trainer gets `trainer_args`, a copy of the arguments with
    `push_to_hub` off and no `hub_token` (the Trainer pickles its arguments into ``training_args.bin``; the token
    goes to this callback's pushes alone), and this callback pushes instead: with any `hub_strategy` but "end",
    each saved checkpoint goes to its own branch (``checkpoint-500``; weights and metadata only, so not
    resumable), and `push_final` sends the finished folder to `hub_revision` (default main). `metadata` and
    `configs` are what `write_checkpoint_metadata` records, written into each checkpoint before it is pushed.
    """

    def __init__(self, args: TrainingArguments, metadata: dict, *configs):
        self.enabled = args.push_to_hub
        self.repo_id = args.hub_model_id or Path(args.output_dir).name
        self.options = {"private": args.hub_private_repo, "token": args.hub_token}
        self.final_revision = args.hub_revision
        self.metadata = metadata
        self.configs = configs
        self.trainer_args = copy.copy(args)
        self.trainer_args.push_to_hub = False
        self.trainer_args.hub_token = None

    def on_save(self, args, state, control, **kwargs):
        if not (self.enabled and state.is_world_process_zero) or HubStrategy(args.hub_strategy) == HubStrategy.END:
            return
        checkpoint = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        write_checkpoint_metadata(checkpoint, self.metadata, *self.configs)
        push_checkpoint(
            checkpoint,
            self.repo_id,
            revision=checkpoint.name,
            commit_message=f"Training in progress, step {state.global_step}",
            **self.options,
        )

    def push_final(self, output_dir: str | Path) -> None:
        """Push the finished checkpoint folder (call once its metadata and eval results are written)."""
        if self.enabled:
            push_checkpoint(
                output_dir, self.repo_id, revision=self.final_revision, commit_message="End of training", **self.options
            )
