"""Verifier training shared by the PRM and ORM stages: data, model, trainer, judging.

Rows (a saved `datasets` folder, or JSONL) are tokenized with the inference tokenization, split by
problem into train and held-out rows, and trained with `VerifierTrainer`, full or LoRA (peft). The output
folder is a normal HF checkpoint (merged weights for LoRA, the adapter in ``adapter/``) with the
tokenizer, ``ponder.json`` (exactly how `ponder.inference.load_verifier` must score) and
``eval_results.json``: label-set metrics, solution AUC pooled and within problems on the held-out
rows (``held_out_rows``, against ``answer_correct``), and in the toy world the oracle report on
fresh policy samples of held-out problems, side by side with the policy-likelihood baseline.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from transformers import TrainingArguments, set_seed

from ponder.inference.engine import default_device
from ponder.inference.step_format import StepFormat
from ponder.inference.tasks import TASK_NAMES, get_task
from ponder.inference.verifiers import AGGREGATIONS, READS, label_token_id
from ponder.training.core.configs import checkpoint_path, require
from ponder.training.core.fingerprint import training_fingerprint
from ponder.training.core.finish import finish, judge_only, train
from ponder.training.core.lora import LoraSettings, with_lora
from ponder.training.core.rows import EmptyDatasetError, load_rows, split_by_problem
from ponder.training.core.trainer_push import HubPush
from ponder.training.verifiers.data import build_features
from ponder.training.verifiers.trainer import HEADS, StepCollator, VerifierTrainer, disable_dropout, step_metrics

logger = logging.getLogger(__name__)


@dataclass
class VerifierConfig(LoraSettings):
    """Data, model, head and evaluation of a verifier run; training keys are `TrainingArguments`."""

    dataset: str | None = field(
        default=None, metadata={"help": "stepwise rows to train on: a saved datasets folder or a JSONL file (required)"}
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "checkpoint folder or Hub id the verifier starts from (required)"}
    )
    task: str | None = field(default=None, metadata={"help": f"task of the rows: {', '.join(TASK_NAMES)} (required)"})
    head: str = field(
        default="token_classification",
        metadata={
            "help": "what is trained: token_classification (a score per step), causal_lm ('+'/'-' tokens at "
            "step tags), orm (one score per solution) or likelihood (the LM's lowest token probability "
            "up to each step)"
        },
    )
    num_labels: int = field(
        default=1,
        metadata={
            "help": "token_classification/orm head: 1 (one logit, BCE on the labels) or 2 (two classes, cross-entropy)"
        },
    )
    label_type: str = field(
        default="soft",
        metadata={"help": "soft (the MC value is the target) or hard (1 when any rollout succeeded, else 0)"},
    )
    train_on_last_step_only: bool = field(default=False, metadata={"help": "label only the last step of each row"})
    step_delimiter: str = field(
        default="\n",
        metadata={"help": "text between steps, and between question and steps unless question_separator is set"},
    )
    step_tag: str | None = field(
        default=None,
        metadata={"help": "text after each step at which its score is read; one token in context (unset: no tag)"},
    )
    prompt_template: str = field(
        default="chat",
        metadata={
            "help": "layout: chat (question as the user turn, steps as the answer), plain (question, separator, "
            "steps) or chat_turns (each step a user turn)"
        },
    )
    question_separator: str | None = field(
        default=None, metadata={"help": "text between the question and the first step (unset: step_delimiter)"}
    )
    system_prompt: str | None = field(
        default=None, metadata={"help": "system turn that opens the chat layouts (unset: none)"}
    )
    turn_reply: str | None = field(
        default=None, metadata={"help": "assistant reply after each step in the chat_turns layout (set it there only)"}
    )
    positive_token: str = field(
        default="+",
        metadata={"help": "causal_lm head: token whose probability against negative_token's is a step's score"},
    )
    negative_token: str = field(default="-", metadata={"help": "causal_lm head: token for a wrong step"})
    aggregation: str = field(
        default="last",
        metadata={"help": f"how step scores make a solution score at inference: {', '.join(AGGREGATIONS)}"},
    )
    read: str = field(
        default="step_end",
        metadata={
            "help": "where a step's score is read: step_end (its scoring token) or step_min (the lowest over "
            "its tokens; token_classification only)"
        },
    )
    attempts_in_context: int = field(
        default=0,
        metadata={"help": "earlier attempts of a revision chain read before each solution (a revision ORM; 0: none)"},
    )
    max_length: int = field(
        default=1024, metadata={"help": "token cap of one row; steps past it are dropped and counted"}
    )
    eval_fraction: float = field(default=0.1, metadata={"help": "share of problems held out for evaluation, in [0, 1)"})
    skip_bad_rows: bool = field(
        default=False, metadata={"help": "skip and count malformed rows instead of stopping at the first"}
    )
    disable_dropout: bool = field(default=True, metadata={"help": "turn every dropout layer off before training"})
    oracle_eval_policy: str | None = field(
        default=None,
        metadata={"help": "policy whose fresh samples the oracle evaluation judges, toy tasks only (unset: skipped)"},
    )
    oracle_eval_levels: list[int] = field(
        default_factory=lambda: [1, 2, 3, 4, 5, 6],
        metadata={"help": "levels of the oracle evaluation's held-out problems"},
    )
    oracle_eval_problems_per_level: int = field(
        default=50, metadata={"help": "held-out problems per level of the oracle evaluation"}
    )
    oracle_eval_samples: int = field(
        default=16, metadata={"help": "solutions sampled per problem in the oracle evaluation, also its best-of-N size"}
    )
    oracle_eval_temperature: float = field(
        default=0.8, metadata={"help": "sampling temperature of the oracle evaluation"}
    )
    oracle_eval_max_new_tokens: int = field(
        default=192, metadata={"help": "token cap of one sampled solution in the oracle evaluation"}
    )
    oracle_eval_seed: int = field(
        default=4321, metadata={"help": "seed of the oracle evaluation's problems and samples"}
    )
    eval_only: bool = field(
        default=False,
        metadata={"help": "train nothing: judge the checkpoint at model_name_or_path, write the report to output_dir"},
    )

    def __post_init__(self):
        require(self, "dataset", "model_name_or_path", "task")
        if self.head not in HEADS:
            raise ValueError(f"head: unknown head {self.head!r}; use one of {sorted(HEADS)}")
        if self.num_labels not in (1, 2):
            raise ValueError(f"num_labels: 1 (BCE on soft labels) or 2 (two classes), got {self.num_labels}")
        if self.head == "causal_lm" and not self.step_tag:
            raise ValueError("step_tag: a causal_lm PRM reads '+'/'-' at a step tag; set step_tag")
        if self.read not in READS or (self.read == "step_min" and self.head != "token_classification"):
            raise ValueError(f"read: one of {READS}; 'step_min' needs head token_classification, got {self.read!r}")
        if self.attempts_in_context < 0:
            raise ValueError(f"attempts_in_context: must be at least 0, got {self.attempts_in_context}")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction: must be in [0, 1), got {self.eval_fraction}")

    @property
    def feature_read(self) -> str:
        """How features are labelled: a ``likelihood`` head needs every token of a step (``step_min``)."""
        return "step_min" if self.head == "likelihood" else self.read

    def step_format(self) -> StepFormat:
        return StepFormat(
            self.step_delimiter,
            self.step_tag,
            self.prompt_template,
            self.question_separator,
            self.system_prompt,
            self.turn_reply,
        )


def load_model(config: VerifierConfig, tokenizer):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoModelForTokenClassification

    path = config.model_name_or_path
    if config.head in ("causal_lm", "likelihood"):
        return AutoModelForCausalLM.from_pretrained(path)
    auto = (
        AutoModelForTokenClassification if config.head == "token_classification" else AutoModelForSequenceClassification
    )
    return auto.from_pretrained(path, num_labels=config.num_labels, pad_token_id=tokenizer.pad_token_id)


def verifier_metadata(config: VerifierConfig) -> dict:
    return {
        "kind": HEADS[config.head],
        "task": config.task,
        **config.step_format().to_dict(),
        "positive_token": config.positive_token if config.head == "causal_lm" else None,
        "negative_token": config.negative_token if config.head == "causal_lm" else None,
        "aggregation": config.aggregation,
        "read": config.read,
        "attempts_in_context": config.attempts_in_context,
        "max_length": config.max_length,
        "label_type": config.label_type,
        "base_model": config.model_name_or_path,
    }


def train_verifier(config: VerifierConfig, args: TrainingArguments, target: str = "steps") -> dict:
    """Train, save and judge a verifier (`target` "steps" for a PRM, "answer" for an ORM); returns its record."""
    from transformers import AutoTokenizer

    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint_path("model_name_or_path", config.model_name_or_path))
    train_rows, eval_rows = split_by_problem(load_rows(config.dataset), config.eval_fraction, args.seed)
    build = dict(
        tokenizer=tokenizer,
        step_format=config.step_format(),
        max_length=config.max_length,
        target=target,
        label_type=config.label_type,
        last_step_only=config.train_on_last_step_only,
        skip_bad_rows=config.skip_bad_rows,
        read=config.feature_read,
    )
    train_features, train_stats = build_features(train_rows, **build)
    if not train_features:
        raise EmptyDatasetError(
            f"{config.dataset}: nothing to train on: {len(train_rows)} training rows, none with a labelled step "
            f"({train_stats.bad_rows} bad, {train_stats.rows_without_steps} without a step that fits max_length)"
        )
    eval_features, _ = build_features(eval_rows, **build)
    logger.info("verifier data: %s", train_stats)
    model = load_model(config, tokenizer)
    if config.disable_dropout:
        disable_dropout(model)
    if config.use_peft:
        task_types = {
            "token_classification": "TOKEN_CLS",
            "orm": "SEQ_CLS",
            "causal_lm": "CAUSAL_LM",
            "likelihood": "CAUSAL_LM",
        }
        saved = None if task_types[config.head] == "CAUSAL_LM" else ["score"]
        model = with_lora(model, config, task_types[config.head], saved)
    label_token_ids = None
    if config.head == "causal_lm":
        label_token_ids = [label_token_id(tokenizer, t) for t in (config.negative_token, config.positive_token)]
    args.remove_unused_columns = False
    hub_push = HubPush(args, verifier_metadata(config), config, args)
    trainer = VerifierTrainer(
        model=model,
        args=hub_push.trainer_args,
        train_dataset=train_features,
        eval_dataset=eval_features or None,
        data_collator=StepCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        compute_metrics=step_metrics,
        head=config.head,
        label_token_ids=label_token_ids,
        callbacks=[hub_push],
    )
    result = train(trainer, training_fingerprint(config, args, ("model_name_or_path",), ("dataset",)))
    # a metric that needs both classes is NaN in the Trainer's logs when the held-out labels hold one; null here
    label_metrics = trainer.evaluate() if eval_features else {}
    label_metrics = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in label_metrics.items()}
    return finish(
        trainer,
        result,
        hub_push,
        EVAL_RESULTS,
        lora=config,
        load_base=lambda: load_model(config, tokenizer),
        training={"train_rows": len(train_rows), "eval_rows": len(eval_rows), "data": vars(train_stats)},
        results={"label_set": label_metrics},
        judge=partial(judge_verifier, config, held_out_rows=eval_rows),
    )


def judge_verifier(config: VerifierConfig, checkpoint: Path, held_out_rows: list[dict]) -> dict:
    """The verifier saved at `checkpoint` on `held_out_rows` and, in the toy world, against the oracle."""
    from ponder.inference.verifiers import load_verifier
    from ponder.training.verifiers.judging import judge_rows

    verifier = load_verifier(checkpoint, device=default_device())
    record = {}
    if held_out_rows:
        record["held_out_rows"] = judge_rows(verifier, held_out_rows, config.aggregation)
    if config.oracle_eval_policy and hasattr(get_task(config.task), "first_wrong_step"):
        record["oracle"] = oracle_evaluation(config, verifier)
        record.update({key: record["oracle"]["verifier"]["all"][key] for key in ORACLE_HEADLINES})
    return record


def run_verifier_stage(config: VerifierConfig, args: TrainingArguments, target: str = "steps") -> dict:
    """Train and judge a verifier, or with `eval_only` judge the checkpoint at `model_name_or_path` again."""
    if not config.eval_only:
        record = train_verifier(config, args, target)
    else:
        held_out = split_by_problem(load_rows(config.dataset), config.eval_fraction, args.seed)[1]
        judge = partial(judge_verifier, config, held_out_rows=held_out)
        record = judge_only(judge, config.model_name_or_path, args.output_dir, EVAL_RESULTS)
    if record:
        logger.info("eval results: %s", {k: v for k, v in record.items() if k not in ("oracle", "training")})
    return record


EVAL_RESULTS = "eval_results.json"
ORACLE_HEADLINES = ("step_auc_oracle", "step_auc_within_problem", "first_error_f1")


def oracle_evaluation(config: VerifierConfig, verifier) -> dict:
    """`verifier` and the policy-likelihood baseline, judged on the same fresh samples."""
    from ponder.inference.generation import EngineConfig, make_generator
    from ponder.inference.verifiers import HFVerifier
    from ponder.training.verifiers.judging import judge, sample_problems

    device = default_device()
    task = get_task(config.task)
    generator = make_generator(config.oracle_eval_policy, EngineConfig(backend="hf"), device=device)
    problems = sample_problems(
        generator,
        task,
        config.oracle_eval_levels,
        config.oracle_eval_problems_per_level,
        config.oracle_eval_samples,
        config.oracle_eval_seed,
        temperature=config.oracle_eval_temperature,
        max_new_tokens=config.oracle_eval_max_new_tokens,
    )
    # The policy that sampled is the baseline verifier too: no second copy is loaded.
    baseline = HFVerifier(
        generator.model,
        generator.tokenizer,
        "policy_likelihood",
        StepFormat(step_delimiter=task.step_delimiter),
        aggregation="min",
    )
    return {
        "bon_n": config.oracle_eval_samples,
        "verifier": judge(verifier, problems, config.aggregation),
        "policy_likelihood": judge(baseline, problems, "min"),
    }
