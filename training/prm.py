"""PRM stage: fine-tune a process reward model on stepwise labels (ponder's own trainer; TRL has none).

    ponder prm --config recipes/toy/prm.yaml
    accelerate launch --config_file accelerate_configs/zero3.yaml -m ponder.training.prm \\
        --config recipes/toy/prm.yaml

Rows (a saved `datasets` folder, or JSONL) are tokenized with the inference tokenization, split by
problem into train and eval, and trained with `VerifierTrainer`, full or LoRA (peft). The output
folder is a normal HF checkpoint (merged weights for LoRA, the adapter in ``adapter/``) with the
tokenizer, ``ponder.json`` (exactly how `ponder.inference.load_verifier` must score) and
``eval_results.json``: label-set metrics, solution AUC pooled and within problems on the held-out
rows (``held_out_rows``, against ``answer_correct``), and in the toy world the oracle report on
fresh policy samples of held-out problems, side by side with the policy-likelihood baseline.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import TrainingArguments, set_seed

from ponder.inference.step_format import StepFormat
from ponder.inference.tasks import get_task
from ponder.inference.verifiers import READS
from ponder.training.configs import parse_config
from ponder.training.lora import LoraSettings, train_and_save, with_lora
from ponder.training.outputs import write_json_atomic
from ponder.training.trainer_push import HubPush
from ponder.training.verifier_data import build_features
from ponder.training.verifier_trainer import HEADS, StepCollator, VerifierTrainer, disable_dropout, step_metrics

logger = logging.getLogger(__name__)


@dataclass
class VerifierConfig(LoraSettings):
    """Data, model, head and evaluation of a verifier run; training keys are `TrainingArguments`."""

    dataset: str = "outputs/toy/label/dataset"
    model_name_or_path: str = "outputs/toy/policy"
    task: str = "arith"
    head: str = "token_classification"
    num_labels: int = 1
    label_type: str = "soft"
    train_on_last_step_only: bool = False
    step_delimiter: str = "\n"
    step_tag: str | None = None
    prompt_template: str = "chat"
    question_separator: str | None = None
    system_prompt: str | None = None
    turn_reply: str | None = None
    positive_token: str = "+"
    negative_token: str = "-"
    aggregation: str = "last"
    read: str = "step_end"
    attempts_in_context: int = 0
    max_length: int = 1024
    eval_fraction: float = 0.1
    skip_bad_rows: bool = False
    disable_dropout: bool = True
    oracle_eval_policy: str | None = "outputs/toy/policy"
    oracle_eval_levels: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6])
    oracle_eval_problems_per_level: int = 50
    oracle_eval_samples: int = 16
    oracle_eval_temperature: float = 0.8
    oracle_eval_max_new_tokens: int = 192
    oracle_eval_seed: int = 4321

    def __post_init__(self):
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


def load_rows(path: str) -> list[dict]:
    """Stepwise rows from a saved `datasets` folder or a JSONL file."""
    if Path(path).is_dir():
        from datasets import load_from_disk

        return load_from_disk(path).to_list()
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def split_by_problem(rows: list[dict], eval_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Train and eval rows with no problem in both (rows group by `problem_id`, else by prompt)."""

    def problem(row: dict) -> str:
        return str(row["problem_id"] if "problem_id" in row else row["prompt"])

    keys = sorted({problem(r) for r in rows})
    random.Random(seed).shuffle(keys)
    held_out = set(keys[: round(len(keys) * eval_fraction)])
    train = [r for r in rows if problem(r) not in held_out]
    return train, [r for r in rows if problem(r) in held_out]


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
    """Train, save and evaluate a verifier (`target` "steps" for a PRM, "answer" for an ORM)."""
    from transformers import AutoTokenizer

    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(config.model_name_or_path)
    rows = load_rows(config.dataset)
    train_rows, eval_rows = split_by_problem(rows, config.eval_fraction, args.seed)
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
        label_token_ids = [tokenizer.convert_tokens_to_ids(t) for t in (config.negative_token, config.positive_token)]
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
    saved = train_and_save(
        trainer,
        tokenizer,
        config,
        lambda: load_model(config, tokenizer),
        verifier_metadata(config),
        config,
        args,
        evaluate=bool(eval_features),
    )
    if saved is None:
        return {}
    result, train_seconds, label_metrics = saved
    output_dir = Path(args.output_dir)
    record = {
        "training": {
            "steps": trainer.state.global_step,
            "train_seconds": round(train_seconds, 1),
            "mean_train_loss": result.training_loss,
            "train_rows": len(train_rows),
            "eval_rows": len(eval_rows),
            "data": vars(train_stats),
            "distributed": distributed_setup(trainer.accelerator),
        },
        "label_set": label_metrics,
    }
    if eval_rows:
        from ponder.inference.verifiers import load_verifier
        from ponder.training.verifier_eval import judge_rows

        device = "cuda" if torch.cuda.is_available() else "cpu"
        record["held_out_rows"] = judge_rows(load_verifier(output_dir, device=device), eval_rows, config.aggregation)
    if config.oracle_eval_policy and hasattr(get_task(config.task), "first_wrong_step"):
        record["oracle"] = oracle_evaluation(config, output_dir)
        record.update({key: record["oracle"]["verifier"]["all"][key] for key in ORACLE_HEADLINES})
    write_json_atomic(output_dir / "eval_results.json", record)
    hub_push.push_final(output_dir)
    return record


def distributed_setup(accelerator) -> dict:
    """How the run was spread: process count, accelerate's distributed type and the ZeRO stage if any."""
    plugin = accelerator.state.deepspeed_plugin
    return {
        "processes": accelerator.num_processes,
        "type": accelerator.distributed_type.value,
        "zero_stage": plugin.zero_stage if plugin is not None else None,
    }


ORACLE_HEADLINES = ("step_auc_oracle", "step_auc_within_problem", "first_error_f1")


def oracle_evaluation(config: VerifierConfig, checkpoint: Path) -> dict:
    """The trained verifier and the policy-likelihood baseline, judged on the same fresh samples."""
    from ponder.inference.generation import make_generator
    from ponder.inference.verifiers import HFVerifier, load_verifier
    from ponder.training.verifier_eval import judge, sample_problems

    device = "cuda" if torch.cuda.is_available() else "cpu"
    task = get_task(config.task)
    generator = make_generator(config.oracle_eval_policy, backend="hf", device=device)
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
    verifier = load_verifier(checkpoint, device=device)
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


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config, args = parse_config((VerifierConfig, TrainingArguments), argv)
    record = train_verifier(config, args)
    if record:
        logger.info("eval results: %s", {k: v for k, v in record.items() if k not in ("oracle", "training")})
    return record


if __name__ == "__main__":
    main()
