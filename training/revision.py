"""Revision stage: fine-tune a revision model on revision trajectories with TRL's `SFTTrainer`.

    ponder revision --config recipes/toy/revision.yaml
    accelerate launch --config_file accelerate_configs/zero3.yaml -m ponder.training.revision \\
        --config recipes/toy/revision.yaml

Trajectories are prompt-completion chats (the revisions stage writes them). They are tokenized here
as inference renders them (`sft_examples.chat_example`): the prompt with the generation prompt, then
the final attempt and EOS, which alone carry the loss. Full fine-tuning or LoRA (peft, merged for
release). The checkpoint's ``ponder.json`` records the revision format (instruction turn and context
window) that `ponder.inference.revision` must show the model, and ``eval.json`` holds pass@1 per turn on held-out
problems next to no-context controls sampled at the same temperature (`revision_eval`). A run resumes
from the newest checkpoint in its output folder. With ``--eval_only true`` the stage trains nothing: it
judges the revision checkpoint at `model_name_or_path` and writes ``eval.json`` to `output_dir`.
Trajectories without a row (a policy that solved none of its problems) stop the stage, or with
``untrained_without_trajectories`` leave the base model, saved untrained, as the revision model.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from transformers import set_seed
from trl import SFTConfig, SFTTrainer

from ponder.inference.engine import default_device
from ponder.inference.revision import RevisionFormat, load_revision_format
from ponder.inference.tasks import TASK_NAMES, get_task
from ponder.training.core.configs import ConfigError, checkpoint_path, parse_config, require
from ponder.training.core.fingerprint import training_fingerprint
from ponder.training.core.finish import finish, judge_only, train
from ponder.training.core.logs import setup_logging
from ponder.training.core.lora import LoraSettings, with_lora
from ponder.training.core.outputs import write_checkpoint_metadata, write_json_atomic
from ponder.training.core.rows import EmptyDatasetError, load_rows, split_by_problem
from ponder.training.core.sft_examples import chat_example
from ponder.training.core.trainer_push import HubPush
from ponder.training.revising.judging import judge_revisions

logger = logging.getLogger(__name__)


@dataclass
class RevisionConfig(LoraSettings):
    """Data, base model and evaluation of a revision-model run; training keys are TRL's `SFTConfig`.

    The revision format is read from the trajectories' ``stats.json`` (beside the dataset folder)
    when there is one, so the model is always shown attempts the way it was trained on them.
    `plain_weight` repeats the trajectories without wrong attempts (plain solving) that many times,
    replay that keeps a small model from forgetting how to solve without context.
    """

    dataset: str | None = field(
        default=None,
        metadata={"help": "revision trajectories: a saved datasets folder or a JSONL file (required unless eval_only)"},
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "checkpoint the revision model starts from; with eval_only, the one judged (required)"},
    )
    task: str | None = field(
        default=None, metadata={"help": f"task of the trajectories: {', '.join(TASK_NAMES)} (required)"}
    )
    instruction: str | None = field(
        default=None,
        metadata={"help": "user turn after each attempt (unset: the trajectories' stats.json, else the default)"},
    )
    context_window: int | None = field(
        default=None,
        metadata={"help": "earlier attempts the model is shown (unset: the trajectories' stats.json, else 4)"},
    )
    plain_weight: int = field(
        default=1, metadata={"help": "times each trajectory without earlier attempts is used (1: once, no replay)"}
    )
    eval_fraction: float = field(
        default=0.0, metadata={"help": "share of problems held out for the eval loss, in [0, 1)"}
    )
    eval_control_policy: str | None = field(
        default=None, metadata={"help": "policy sampled without context as a control in the evaluation (unset: none)"}
    )
    eval_levels: list[int] = field(
        default_factory=lambda: [1, 2, 3, 4, 5, 6],
        metadata={"help": "levels of the evaluation's generated test problems"},
    )
    eval_problems_per_level: int = field(
        default=200, metadata={"help": "test problems per level of the turn-by-turn evaluation (0: no evaluation)"}
    )
    eval_turns: int = field(default=8, metadata={"help": "attempts per chain in the evaluation"})
    eval_temperature: float = field(
        default=0.8, metadata={"help": "sampling temperature of the evaluation and its controls"}
    )
    eval_max_new_tokens: int = field(default=192, metadata={"help": "token cap of one attempt in the evaluation"})
    eval_seed: int = field(default=2468, metadata={"help": "seed of the evaluation's problems and samples"})
    eval_only: bool = field(
        default=False,
        metadata={
            "help": "train nothing: judge the checkpoint at model_name_or_path and write eval.json to output_dir"
        },
    )
    untrained_without_trajectories: bool = field(
        default=False,
        metadata={
            "help": "with no trajectories (the policy solved none of its problems), save the base model untrained "
            "as the revision model instead of stopping, so that a rehearsal on a weak model runs on"
        },
    )

    def __post_init__(self):
        require(self, "model_name_or_path", "task")
        if not self.eval_only:
            require(self, "dataset")
        if self.eval_problems_per_level and not hasattr(get_task(self.task), "generate"):
            raise ConfigError(f"eval_problems_per_level: task {self.task!r} has no problem generator; set it to 0")
        if self.plain_weight < 1:
            raise ValueError(f"plain_weight: at least 1 (1 = no replay), got {self.plain_weight}")

    def revision_format(self) -> RevisionFormat:
        """The format of the trajectories: their stats.json, else this recipe's keys, else the defaults."""
        stats = Path(self.dataset).parent / "stats.json"
        recorded = json.loads(stats.read_text()).get("revision_format", {}) if stats.exists() else {}
        given = {"instruction": self.instruction, "context_window": self.context_window}
        for key, value in given.items():
            if value is not None and key in recorded and recorded[key] != value:
                raise ValueError(
                    f"{key}: the recipe says {value!r} but the trajectories in {stats} use {recorded[key]!r}"
                )
        return RevisionFormat(**(recorded | {k: v for k, v in given.items() if v is not None}))


def train_revision_model(config: RevisionConfig, args: SFTConfig) -> dict:
    """Fine-tune, save and judge a revision model; returns the record written to ``eval.json``."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    set_seed(args.seed)
    metadata = {
        "kind": "revision",
        "task": config.task,
        "step_delimiter": get_task(config.task).step_delimiter,
        "prompt": "chat_template",
        "revision_format": config.revision_format().to_dict(),
        "base_model": config.model_name_or_path,
    }
    tokenizer = AutoTokenizer.from_pretrained(checkpoint_path("model_name_or_path", config.model_name_or_path))
    rows = []
    for r in load_rows(config.dataset):
        example = chat_example(tokenizer, r["prompt"], r["completion"][-1]["content"])
        rows.append({"example": example, "problem_id": r["prompt"][0]["content"], "plain": len(r["prompt"]) == 1})
    if not rows:
        if not config.untrained_without_trajectories:
            raise EmptyDatasetError(
                f"{config.dataset}: no trajectories, the policy solved none of its problems; sample more "
                "(samples_per_problem, max_problems) or set untrained_without_trajectories"
            )
        return save_untrained(config, args, tokenizer, metadata)
    train_rows, eval_rows = split_by_problem(rows, config.eval_fraction, args.seed)
    if not train_rows:
        raise EmptyDatasetError(
            f"{config.dataset}: nothing to train on: eval_fraction {config.eval_fraction} holds out the problems "
            f"of all {len(rows)} trajectories; lower it"
        )
    train_rows += [r for r in train_rows if r["plain"]] * (config.plain_weight - 1)
    model = AutoModelForCausalLM.from_pretrained(config.model_name_or_path)
    if config.use_peft:
        model = with_lora(model, config, "CAUSAL_LM")
    hub_push = HubPush(args, metadata, config, args)
    trainer = SFTTrainer(
        model=model,
        args=hub_push.trainer_args,
        callbacks=[hub_push],
        train_dataset=Dataset.from_list([r["example"] for r in train_rows]),
        eval_dataset=Dataset.from_list([r["example"] for r in eval_rows]) if eval_rows else None,
        processing_class=tokenizer,
    )
    result = train(trainer, training_fingerprint(config, args, ("model_name_or_path",), ("dataset",)))
    eval_loss = trainer.evaluate()["eval_loss"] if eval_rows else None
    return finish(
        trainer,
        result,
        hub_push,
        EVAL_FILE,
        lora=config,
        load_base=lambda: AutoModelForCausalLM.from_pretrained(config.model_name_or_path),
        training={"train_rows": len(train_rows), "eval_trajectories": len(eval_rows), "eval_loss": eval_loss},
        judge=partial(evaluate_checkpoint, config),
    )


def save_untrained(config: RevisionConfig, args: SFTConfig, tokenizer, metadata: dict) -> dict:
    """The base model saved untrained as the revision model, with its metadata, recipe and judgement."""
    from transformers import AutoModelForCausalLM

    logger.warning("no trajectories in %s: the base model is saved untrained as the revision model", config.dataset)
    if not args.should_save:  # the main process saves
        return {}
    output_dir = Path(args.output_dir)
    AutoModelForCausalLM.from_pretrained(config.model_name_or_path).save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    write_checkpoint_metadata(output_dir, metadata, config, args)
    record = {"training": {"steps": 0, "train_rows": 0, "untrained": True}} | evaluate_checkpoint(config, output_dir)
    write_json_atomic(output_dir / EVAL_FILE, record)
    return record


EVAL_FILE = "eval.json"


def evaluate_checkpoint(config: RevisionConfig, checkpoint: Path) -> dict:
    """pass@1 per turn of the saved model with context, and of the no-context controls, on test problems.

    The model is shown its attempts in the revision format of its ``ponder.json``; nothing is judged when
    `eval_problems_per_level` is 0.
    """
    from ponder.inference.generation import EngineConfig, make_generator

    if config.eval_problems_per_level <= 0:
        return {}
    device = default_device()
    model = make_generator(str(checkpoint), EngineConfig(backend="hf"), device=device)
    systems = {"revision_model": (model, True), "revision_model_no_context": (model, False)}
    if config.eval_control_policy:
        control = make_generator(config.eval_control_policy, EngineConfig(backend="hf"), device=device)
        systems["policy_no_context"] = (control, False)
    report = judge_revisions(
        systems,
        get_task(config.task),
        load_revision_format(checkpoint),
        config.eval_levels,
        config.eval_problems_per_level,
        config.eval_turns,
        temperature=config.eval_temperature,
        max_new_tokens=config.eval_max_new_tokens,
        seed=config.eval_seed,
    )
    headline = report["revision_model"]
    return {
        "pass_at_1_per_turn": headline["pass_at_1_per_turn"],
        "correct_to_wrong_per_turn": headline["correct_to_wrong_per_turn"],
        "wrong_to_correct_per_turn": headline["wrong_to_correct_per_turn"],
        "evaluation": report,
    }


CONFIG_TYPES = (RevisionConfig, SFTConfig)  # what the stage's recipe and flags fill


def main(argv: list[str] | None = None) -> dict:
    setup_logging()
    config, args = parse_config(CONFIG_TYPES, argv)
    if config.eval_only:  # judge an existing revision checkpoint again, e.g. on more problems
        record = judge_only(partial(evaluate_checkpoint, config), config.model_name_or_path, args.output_dir, EVAL_FILE)
    else:
        record = train_revision_model(config, args)
    if record.get("pass_at_1_per_turn"):
        logger.info("pass@1 per turn: %s", record["pass_at_1_per_turn"])
    return record


if __name__ == "__main__":
    main()
