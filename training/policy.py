"""Policy stage (toy world): train a tiny causal LM from scratch on generated solutions of a toy task.

    ponder policy --config recipes/toy/policy.yaml
    accelerate launch -m ponder.training.policy --config recipes/toy/policy.yaml

Any task with a training-problem stream (`ToyTask.training_example`: `arith`, `countdown`) trains a
policy: fresh random training problems every step (never from the test split), loss on the solution only,
training until a loss target, a step cap or a time cap; a run resumes from the newest checkpoint in
its output folder. Afterwards the saved policy is sampled on held-out problems of every level and
`eval.json` is written into the checkpoint folder. With ``--eval_only true`` the stage trains nothing:
it judges the policy at `init_from` and writes ``eval.json`` to `output_dir`.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import IterableDataset
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_callback import ExportableState

from ponder.inference.engine import default_device
from ponder.inference.tasks import TASK_NAMES, get_task
from ponder.inference.tasks.toy import ToyTask, check_range
from ponder.training.core.configs import ConfigError, parse_config
from ponder.training.core.fingerprint import training_fingerprint
from ponder.training.core.finish import finish, judge_only, train
from ponder.training.core.logs import setup_logging
from ponder.training.core.sft_examples import multi_turn_example
from ponder.training.core.trainer_push import HubPush
from ponder.training.toy.judging import evaluate_policy
from ponder.training.toy.model import build_model, build_tokenizer

logger = logging.getLogger(__name__)


@dataclass
class PolicyConfig:
    """Model shape, training problems, stopping rule and evaluation of the toy policy.

    Training problems are drawn from the task's inclusive ranges, keys ``train_<name>`` (unset: the
    task's defaults); a key of another task is an error. `arith` draws the operand count and the
    digits uniformly from `train_operands` and `train_digits`, so every operand position of every
    length is practised; `countdown` draws the level from `train_levels`. `levels` are the difficulty
    levels evaluated. `earlier_turns` ([low, high]) puts that many other solved problems before each
    training question (`SolutionStream`). `init_from` continues training a saved policy (its shape
    and tokenizer; the shape keys are then unused). Training keys: `TrainingArguments`.
    """

    task: str = field(
        default="arith",
        metadata={"help": "task the policy learns: a toy task with a training-problem stream (arith, countdown)"},
    )
    levels: list[int] | None = field(
        default=None,
        metadata={"help": "levels the policy is evaluated on after training (unset: all of the task's levels)"},
    )
    train_operands: list[int] | None = field(
        default=None,
        metadata={
            "help": "arith: inclusive [low, high] range of the operand count of training problems (low >= 2; "
            "unset: [2, 10])"
        },
    )
    train_digits: list[int] | None = field(
        default=None,
        metadata={
            "help": "arith: inclusive [low, high] range of the digits per operand of training problems "
            "(low >= 1; unset: [1, 3])"
        },
    )
    train_levels: list[int] | None = field(
        default=None,
        metadata={"help": "countdown: inclusive [low, high] range of the levels of training problems (unset: all)"},
    )
    earlier_turns: list[int] = field(
        default_factory=lambda: [0, 0],
        metadata={"help": "inclusive [low, high] range of solved problems shown before each training question"},
    )
    init_from: str | None = field(
        default=None,
        metadata={"help": "saved policy to continue training; its shape and tokenizer replace the shape keys"},
    )
    hidden_size: int = field(default=128, metadata={"help": "model width of a policy trained from scratch"})
    num_layers: int = field(default=3, metadata={"help": "decoder layers of a policy trained from scratch"})
    num_heads: int = field(default=4, metadata={"help": "attention heads of a policy trained from scratch"})
    intermediate_size: int = field(default=256, metadata={"help": "MLP width of a policy trained from scratch"})
    max_position_embeddings: int = field(
        default=1024,
        metadata={"help": "token positions of a policy trained from scratch, also its tokenizer's length cap"},
    )
    loss_target: float = field(
        default=0.0, metadata={"help": "stop once a logged training loss falls below this (0: no loss target)"}
    )
    max_train_minutes: float = field(
        default=0.0,
        metadata={"help": "stop training after this many minutes, those before a resumption included (0: no time cap)"},
    )
    length_grouping: int = field(
        default=8,
        metadata={"help": "batches drawn at a time and sorted by length, so that a batch needs little padding"},
    )
    eval_problems_per_level: int = field(
        default=200, metadata={"help": "held-out problems per level of the evaluation after training"}
    )
    eval_samples: int = field(
        default=16, metadata={"help": "samples per problem from which the evaluation's pass@1 is computed"}
    )
    eval_temperature: float = field(default=0.8, metadata={"help": "sampling temperature of the evaluation"})
    eval_top_p: float = field(default=1.0, metadata={"help": "nucleus sampling probability of the evaluation (1: off)"})
    eval_max_new_tokens: int = field(
        default=320, metadata={"help": "token cap of one sampled solution in the evaluation"}
    )
    eval_seed: int = field(default=1234, metadata={"help": "seed of the evaluation's problems and samples"})
    eval_only: bool = field(
        default=False, metadata={"help": "train nothing: judge the policy at init_from, write eval.json to output_dir"}
    )

    def __post_init__(self):
        if self.levels is None:
            self.levels = sorted(toy_task(self.task).levels)

    def training_ranges(self, task: ToyTask) -> dict[str, list[int]]:
        """The task's training ranges, each ``train_<name>`` key over the task's default; checked."""
        for key in RANGE_KEYS:
            if getattr(self, key) is not None and key.removeprefix("train_") not in task.training_ranges:
                own = ", ".join(f"train_{name}" for name in task.training_ranges)
                raise ValueError(f"{key}: does not apply to task {task.name!r} (its training keys: {own})")
        ranges = {name: getattr(self, f"train_{name}") for name in task.training_ranges}
        ranges = {name: list(task.training_ranges[name] if r is None else r) for name, r in ranges.items()}
        task.check_training_ranges(**ranges)
        return ranges


RANGE_KEYS = [f.name for f in fields(PolicyConfig) if f.name.startswith("train_")]


def toy_task(name: str) -> ToyTask:
    """The task `name`, which must have a training-problem stream."""
    task = get_task(name)
    if not isinstance(task, ToyTask):
        toy = [n for n in TASK_NAMES if isinstance(get_task(n), ToyTask)]
        raise ValueError(f"task: the policy stage trains toy policies only ({', '.join(toy)}), got {name!r}")
    return task


class SolutionStream(IterableDataset):
    """An endless stream of tokenized (prompt, training solution) chats, loss on the solutions only.

    With `earlier_turns` (an inclusive range) each chat first shows that many other solved problems,
    every solution trained, so the policy learns to solve the latest question whatever came before:
    a policy trained on single questions only breaks on any earlier turn (2 nats per token after one
    earlier attempt of the same problem, on the toy 15x policy), which a revision chain always shows.

    Examples are drawn `group` batches at a time and sorted by length before batching, so that a
    batch holds sequences of similar length and little padding. `ranges` are the task's training
    ranges in the order of its `training_ranges` (arith: operands, digits; countdown: levels).
    """

    def __init__(
        self,
        tokenizer,
        *ranges: list[int],
        seed: int,
        batch_size: int,
        group: int,
        earlier_turns: tuple[int, int] = (0, 0),
        task: str = "arith",
    ):
        self.task = toy_task(task)
        self.ranges = dict(zip(self.task.training_ranges, ranges, strict=True))
        self.earlier_turns = earlier_turns
        self.tokenizer = tokenizer
        self.seed = seed
        self.batch_size = batch_size
        self.group = max(1, group)

    def example(self, rng: random.Random) -> dict:
        """One chat: `earlier_turns` solved exchanges, then the last problem; the oldest go if it is too long."""
        # no draw for single-question streams, so they stay the exact stream earlier policies trained on
        count = 1 + (rng.randint(*self.earlier_turns) if self.earlier_turns[1] else 0)
        exchanges = [self.task.training_example(rng, **self.ranges) for _ in range(count)]
        while True:
            example = multi_turn_example(self.tokenizer, exchanges)
            if len(exchanges) == 1 or len(example["input_ids"]) <= self.tokenizer.model_max_length:
                return example
            exchanges = exchanges[1:]

    def __iter__(self):
        worker = torch.utils.data.get_worker_info()
        rng = random.Random(f"policy-stream:{self.seed}:{worker.id if worker else 0}")
        while True:
            examples = sorted(
                (self.example(rng) for _ in range(self.batch_size * self.group)), key=lambda e: len(e["input_ids"])
            )
            batches = [examples[i : i + self.batch_size] for i in range(0, len(examples), self.batch_size)]
            rng.shuffle(batches)
            for batch in batches:
                yield from batch


class PadCollator:
    """Right-pads `input_ids` (pad id) and `labels` (-100) to the longest row of the batch."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[dict]) -> dict:
        width = max(len(r["input_ids"]) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            n = len(row["input_ids"])
            input_ids[i, :n] = torch.tensor(row["input_ids"])
            labels[i, :n] = torch.tensor(row["labels"])
            attention[i, :n] = 1
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention}


class StopRule(TrainerCallback, ExportableState):
    """Stops training once the logged loss falls below `loss_target` or `max_minutes` of training have passed.

    The seconds trained before a resumption count: the Trainer keeps them in each checkpoint's state and
    hands them back to a resumed run (`restore_callback_states_from_checkpoint`).
    """

    def __init__(self, loss_target: float, max_minutes: float):
        self.loss_target = loss_target
        self.max_minutes = max_minutes
        self.seconds_before_resumption = 0.0
        self.start = time.monotonic()
        self.reason = "max_steps"

    def seconds_trained(self) -> float:
        return self.seconds_before_resumption + time.monotonic() - self.start

    def state(self) -> dict:
        return {
            "args": {"loss_target": self.loss_target, "max_minutes": self.max_minutes},
            "attributes": {"seconds_before_resumption": self.seconds_trained()},
        }

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if self.loss_target > 0 and loss is not None and loss < self.loss_target:
            self.reason = f"loss {loss:.4f} < target {self.loss_target}"
            control.should_training_stop = True

    def on_step_end(self, args, state, control, **kwargs):
        if self.max_minutes > 0 and self.seconds_trained() > 60 * self.max_minutes:
            self.reason = f"time cap of {self.max_minutes} minutes"
            control.should_training_stop = True


def train_policy(config: PolicyConfig, args: TrainingArguments) -> dict:
    """Train, save and judge a policy; returns the record written to `eval.json`."""
    task = toy_task(config.task)
    unknown = sorted(set(config.levels) - set(task.levels))
    if unknown:
        raise ValueError(f"levels: unknown {task.name} level(s) {unknown}; levels are {sorted(task.levels)}")
    ranges = config.training_ranges(task)
    check_range("earlier_turns", config.earlier_turns, 0)
    set_seed(args.seed)
    if config.init_from:
        tokenizer = AutoTokenizer.from_pretrained(config.init_from)
        model = AutoModelForCausalLM.from_pretrained(config.init_from)
    else:
        tokenizer = build_tokenizer(model_max_length=config.max_position_embeddings)
        model = build_model(
            tokenizer,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            num_heads=config.num_heads,
            intermediate_size=config.intermediate_size,
            max_position_embeddings=config.max_position_embeddings,
            seed=args.seed,
        )
    logger.info("policy: %.2f M parameters", model.num_parameters() / 1e6)
    stream = SolutionStream(
        tokenizer,
        *ranges.values(),
        seed=args.seed,
        batch_size=args.per_device_train_batch_size,
        group=config.length_grouping,
        earlier_turns=tuple(config.earlier_turns),
        task=task.name,
    )
    args.restore_callback_states_from_checkpoint = True  # a resumed run's time cap counts the minutes before
    metadata = {
        "kind": "policy",
        "task": config.task,
        "step_delimiter": task.step_delimiter,
        "prompt": "chat_template",
    }
    hub_push = HubPush(args, metadata, config, args)
    trainer = Trainer(
        model=model,
        args=hub_push.trainer_args,
        train_dataset=stream,
        data_collator=PadCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=[StopRule(config.loss_target, config.max_train_minutes), hub_push],
    )
    result = train(trainer, training_fingerprint(config, args, (), ()))
    stop_rule = trainer.pop_callback(StopRule)  # a resumed run's is the one restored from the checkpoint
    loss_curve = [[entry["step"], round(entry["loss"], 4)] for entry in trainer.state.log_history if "loss" in entry]
    tokens = trainer.state.num_input_tokens_seen
    rate = tokens and not result.metrics["resumed_from"]  # tokens count from the start, seconds from the resumption
    training = {
        "stopped_by": stop_rule.reason,
        "train_seconds_with_earlier_runs": round(stop_rule.seconds_trained(), 1),
        "train_seconds_before_resumption": round(stop_rule.seconds_before_resumption, 1),
        "final_logged_loss": loss_curve[-1][1] if loss_curve else None,
        "tokens_seen_with_padding": tokens,
        "tokens_per_second_with_padding": round(tokens / result.metrics["train_runtime"]) if rate else None,
        "parameters": model.num_parameters(),
        "loss_curve": loss_curve,
    }
    return finish(trainer, result, hub_push, EVAL_FILE, training=training, judge=partial(judge_policy, config))


EVAL_FILE = "eval.json"


def judge_policy(config: PolicyConfig, checkpoint: Path) -> dict:
    """`evaluate_policy` of the policy saved at `checkpoint`."""
    device = default_device()
    model = AutoModelForCausalLM.from_pretrained(checkpoint).to(device)
    model.config.use_cache = True
    return evaluate_policy(model, AutoTokenizer.from_pretrained(checkpoint), get_task(config.task), config)


CONFIG_TYPES = (PolicyConfig, TrainingArguments)  # what the stage's recipe and flags fill


def main(argv: list[str] | None = None) -> dict:
    setup_logging()
    config, args = parse_config(CONFIG_TYPES, argv)
    if not config.eval_only:
        record = train_policy(config, args)
    elif not config.init_from:
        raise ConfigError("eval_only: set init_from to the policy checkpoint to judge")
    else:
        record = judge_only(partial(judge_policy, config), config.init_from, args.output_dir, EVAL_FILE)
    if record:
        logger.info("pass@1 per level: %s", record["pass_at_1"])
        logger.info("wrote %s/eval.json", args.output_dir)
    return record


if __name__ == "__main__":
    main()
