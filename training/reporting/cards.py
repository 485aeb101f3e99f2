"""Hub cards written from ponder outputs: a model card from a checkpoint folder, a dataset card from a data folder.

A model card's YAML metadata (library, tags, base model, datasets, license, `model-index` results) and its prose
(what the checkpoint is, how it was trained, what was measured, how `ponder.inference` loads it) come from the
folder's ``ponder.json``, ``recipe.yaml`` and ``eval_results.json`` / ``eval.json``. A dataset card carries the
figures of the stage's ``stats.json`` and the configuration that produced the rows.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import yaml
from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, ModelCard, ModelCardData

from ponder.inference.verifiers import METADATA_FILE, VERIFIER_KINDS
from ponder.training.core.outputs import RECIPE_FILE

EVAL_FILES = ("eval_results.json", "eval.json")
STATS_FILE = "stats.json"
DEFAULT_LICENSE = "apache-2.0"
TOY_TASKS = {  # ponder's toy worlds, whose every step an oracle can check
    "arith": "synthetic multi-step arithmetic",
    "countdown": "reach a target by combining numbers, where a legal step can be a dead end",
}

# kind in ponder.json -> (tag, pipeline tag, what it is)
KINDS = {
    "policy": ("policy", "text-generation", "a policy model that writes step-by-step solutions"),
    "prm_token_classification": (
        "process-reward-model",
        "token-classification",
        "a process reward model (PRM) that scores every step of a solution, read at each step's last token",
    ),
    "prm_causal_lm": (
        "process-reward-model",
        "text-generation",
        "a process reward model (PRM) that predicts a positive or a negative token at each step tag",
    ),
    "orm": ("outcome-reward-model", "text-classification", "an outcome reward model (ORM) that scores whole solutions"),
    "revision": (
        "revision-model",
        "text-generation",
        "a revision model that answers again after seeing its earlier (wrong) attempts",
    ),
}

# recipe keys shown under "How it was trained", in this order, when the recipe has them
TRAINING_KEYS = (
    "model_name_or_path", "dataset", "task", "head", "label_type", "aggregation", "read", "use_peft", "lora_r",
    "hidden_size", "num_layers", "learning_rate", "lr_scheduler_type", "warmup_steps", "weight_decay",
    "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "bf16", "seed",
)  # fmt: skip
TRAINING_FIGURES = ("steps", "stopped_by", "train_seconds", "parameters", "mean_train_loss", "distributed")
COUNT_METRICS = {"problems", "samples"}
THROUGHPUT_SUFFIXES = ("_runtime", "_per_second", "epoch")

EXAMPLE_PROBLEM = {
    "toy": "problem = task.generate(1, level=3, seed=0)[0]",
    "default": 'problem = {"problem": "What is $12 \\\\times 7$?", "answer": "84"}',
}
EXAMPLE_SOLUTION = {
    "toy": "solution = task.reference_solution(problem)  # or any sampled solution",
    "default": 'solution = "$12 \\\\times 7 = 84$.\\n\\nThe answer is $\\\\boxed{84}$."',
}

USAGE = {
    "verifier": """from huggingface_hub import snapshot_download
from ponder.inference.tasks import get_task
from ponder.inference.verifiers import load_verifier

task = get_task("{task}")
verifier = load_verifier(snapshot_download("{repo_id}"))  # ponder.json says how it scores
{problem}
{solution}
[scored] = verifier.score([task.make_prompt(problem)], [task.split_steps(solution)])
print(scored.step_scores)  # one score per step (one per solution for an ORM)""",
    "policy": """from huggingface_hub import snapshot_download
from ponder.inference.generation import SamplingParams, chat_prompt, make_generator
from ponder.inference.tasks import get_task

task = get_task("{task}")
generator = make_generator(snapshot_download("{repo_id}"))
{problem}
prompt = chat_prompt(generator.tokenizer, task.make_prompt(problem))
[completions] = generator.generate([prompt], SamplingParams(n=4, temperature=0.8, max_new_tokens=256))
print([task.grade(c.text, problem["answer"]) for c in completions])""",
    "revision": """import json
from pathlib import Path

from huggingface_hub import snapshot_download
from ponder.inference.generation import make_generator
from ponder.inference.revision import RevisionFormat, run_chains, select_from_chains
from ponder.inference.tasks import get_task

path = snapshot_download("{repo_id}")
revision_format = RevisionFormat(**json.loads((Path(path) / "ponder.json").read_text())["revision_format"])
task = get_task("{task}")
generator = make_generator(path)
{problem}
[chains] = run_chains(generator, task, [problem], chains=2, length=4, fmt=revision_format, max_new_tokens=256)
print(select_from_chains(chains, "majority"), problem["answer"])""",
}

# dataset kind -> (columns that identify it, tag, what a row is)
DATASET_KINDS = {
    "stepwise-labels": (
        {"prompt", "completions", "labels"},
        "process-supervision",
        "Stepwise PRM labels: `prompt`, `completions` (the solution's steps), `labels` (soft Monte-Carlo value of "
        "each step in 0..1), `hard` (any rollout from the step reached the right answer), `rollouts`, "
        "`answer_correct`.",
    ),
    "revision-trajectories": (
        {"prompt", "completion"},
        "revision-trajectories",
        "Revision trajectories in prompt-completion chat layout: `prompt` holds the question, earlier wrong attempts "
        "and the revision instruction turns; `completion` is the correct final answer, the only turn trained on.",
    ),
}


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def read_eval_record(folder: Path) -> dict:
    """The checkpoint's measured results: ``eval_results.json`` (verifiers) or ``eval.json`` (policies)."""
    return next((read_json(folder / name) for name in EVAL_FILES if (folder / name).exists()), {})


def hub_id_or_none(reference: str | None) -> str | None:
    """`reference` when it names a Hub repository ("org/name") rather than a local folder."""
    if not reference or Path(reference).exists():
        return None
    return reference if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", reference) else None


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def metric_results(metrics: dict, *, task_type: str, task: str, dataset: str, split: str, config=None) -> list:
    """One `EvalResult` per finite number in `metrics` (counts and throughput figures left out)."""
    return [
        EvalResult(
            task_type=task_type,
            dataset_type=task,
            dataset_name=dataset,
            dataset_split=split,
            dataset_config=config,
            metric_type=name,
            metric_name=name,
            metric_value=value,
        )
        for name, value in metrics.items()
        if is_number(value) and name not in COUNT_METRICS and not name.endswith(THROUGHPUT_SUFFIXES)
    ]


def eval_results(record: dict, task: str, task_type: str) -> list[EvalResult]:
    """`model-index` entries: a policy's per-level pass rates, a verifier's oracle report and label-set metrics."""
    levels = [str(level) for level in record.get("levels", [])]
    per_level = {
        name: v for name, v in record.items() if isinstance(v, dict) and levels and sorted(v) == sorted(levels)
    }
    results = []
    for level in levels:
        metrics = {name: values[level] for name, values in per_level.items()}
        results += metric_results(
            metrics,
            task_type=task_type,
            task=task,
            dataset=f"{task} test problems",
            split="test",
            config=f"level-{level}",
        )
    oracle = record.get("oracle", {})
    results += metric_results(
        oracle.get("verifier", {}).get("all", {}),
        task_type=task_type,
        task=task,
        dataset=f"{task} policy samples of held-out problems ({oracle.get('bon_n')} per problem), oracle-graded",
        split="test",
    )
    results += metric_results(
        record.get("label_set", {}),
        task_type=task_type,
        task=task,
        dataset="held-out training labels",
        split="validation",
    )
    return results


def table(header: tuple[str, ...], rows: list[tuple]) -> str:
    """A markdown table; floats shown with four significant digits."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(f"{c:.4g}" if isinstance(c, float) else str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def mapping_table(mapping: dict, corner: str = "") -> str:
    """A table of a mapping: one row per key, and one column per inner key when the values are mappings."""
    if not all(isinstance(value, dict) for value in mapping.values()):
        return table((corner, "value"), list(mapping.items()))
    columns = list(dict.fromkeys(column for value in mapping.values() for column in value))
    return table((corner, *columns), [(key, *(value.get(c, "") for c in columns)) for key, value in mapping.items()])


def results_section(results: list[EvalResult], record: dict) -> str:
    if not results:
        return f"Measured results: see {' / '.join(EVAL_FILES)} in this repository." if record else "Not measured."
    grouped: dict[tuple, dict[str, dict]] = {}  # (data, split) -> metric -> level -> value
    for r in results:
        metric = grouped.setdefault((r.dataset_name, r.dataset_split), {}).setdefault(r.metric_name, {})
        metric[r.dataset_config or "value"] = r.metric_value
    parts = [
        f"{data} ({split} split):\n\n{mapping_table(metrics, 'metric')}" for (data, split), metrics in grouped.items()
    ]
    oracle = record.get("oracle", {})
    trained, baseline = oracle.get("verifier", {}).get("all", {}), oracle.get("policy_likelihood", {}).get("all", {})
    paired = [(name, value, baseline[name]) for name, value in trained.items() if is_number(baseline.get(name))]
    if paired:
        parts.append(
            "Side by side with the policy-likelihood baseline (the sampling policy scoring a step by the lowest "
            "probability it gave a token so far), on the same samples:\n\n"
            + table(("metric", "this verifier", "policy likelihood"), paired)
        )
    return "\n\n".join(parts)


def training_section(recipe: dict, record: dict) -> str:
    by_steps = recipe.get("max_steps", -1) > 0  # then the epoch count played no part
    hidden = "num_train_epochs" if by_steps else "max_steps"
    rows = [(f"`{key}`", f"`{recipe[key]}`") for key in TRAINING_KEYS if key in recipe and key != hidden]
    figures = record.get("training", {})
    rows += [(name.replace("_", " "), figures[name]) for name in TRAINING_FIGURES if name in figures]
    return (
        table(("setting", "value"), rows) + f"\n\nThe full configuration that produced it is in `{RECIPE_FILE}`."
        if rows
        else f"No training recipe was found in the checkpoint folder (`{RECIPE_FILE}`)."
    )


def usage_snippet(kind: str, task: str, repo_id: str) -> str:
    template = "verifier" if kind in VERIFIER_KINDS else "revision" if kind == "revision" else "policy"
    example = "toy" if task in TOY_TASKS else "default"
    return USAGE[template].format(
        task=task, repo_id=repo_id, problem=EXAMPLE_PROBLEM[example], solution=EXAMPLE_SOLUTION[example]
    )


def model_card(folder: str | Path, repo_id: str, license: str = DEFAULT_LICENSE) -> ModelCard:
    """The model card of a ponder checkpoint folder that is to live at `repo_id`."""
    folder = Path(folder)
    metadata = read_json(folder / METADATA_FILE)
    if "kind" not in metadata:
        raise ValueError(f"{folder}: not a ponder checkpoint ({METADATA_FILE} with a 'kind' is missing)")
    kind, task = metadata["kind"], metadata.get("task", "unknown")
    tag, pipeline_tag, description = KINDS.get(kind, (kind.replace("_", "-"), None, f"a ponder `{kind}` checkpoint"))
    recipe = yaml.safe_load((folder / RECIPE_FILE).read_text()) if (folder / RECIPE_FILE).exists() else {}
    record = read_eval_record(folder)
    results = eval_results(record, task, pipeline_tag or "text-generation")
    base_model = hub_id_or_none(recipe.get("model_name_or_path") or metadata.get("base_model"))
    dataset = hub_id_or_none(recipe.get("dataset"))
    name = repo_id.split("/")[-1]
    data = ModelCardData(
        library_name="ponder",
        license=license,
        tags=["ponder", tag, task] + (["toy"] if task in TOY_TASKS else []),
        pipeline_tag=pipeline_tag,
        base_model=base_model,
        datasets=[dataset] if dataset else None,
        model_name=name,
        eval_results=results or None,
    )
    source = recipe.get("model_name_or_path") or metadata.get("base_model")
    origin = f"[{base_model}](https://huggingface.co/{base_model})" if base_model else f"`{source}`"
    toy_note = f" (ponder's toy world: {TOY_TASKS[task]}; an oracle checks every step)" if task in TOY_TASKS else ""
    summary = (
        f"{description[0].upper() + description[1:]}. Task: `{task}`{toy_note}. "
        f"Trained with ponder, {f'fine-tuned from {origin}' if source else 'from scratch'}."
    )
    body = f"""
# {name}

{summary}

## What it is

`{METADATA_FILE}` travels with the weights and tells `ponder.inference` how to use them:

{table(("field", "value"), [(f"`{key}`", f"`{json.dumps(value)}`") for key, value in metadata.items()])}

## How it was trained

{training_section(recipe, record)}

## Results

{results_section(results, record)}

## How to use it

```python
{usage_snippet(kind, task, repo_id)}
```
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def dataset_kind(columns: set[str]) -> str | None:
    return next((kind for kind, (needed, _, _) in DATASET_KINDS.items() if needed <= columns), None)


def dataset_card(
    repo_id: str, split_rows: dict[str, int], columns: list[str], stats: dict, license: str = DEFAULT_LICENSE
) -> DatasetCard:
    """The dataset card of rows pushed to `repo_id` (`split_rows`: rows per split), with `stats.json` figures."""
    kind = dataset_kind(set(columns))
    tag, row_description = (DATASET_KINDS[kind][1], DATASET_KINDS[kind][2]) if kind else (None, "Rows")
    config = stats.get("config", {})
    task = config.get("task")
    data = DatasetCardData(
        license=license,
        tags=["ponder"] + [t for t in (tag, task) if t] + (["toy"] if task in TOY_TASKS else []),
        pretty_name=repo_id.split("/")[-1],
        configs=[
            {
                "config_name": "default",
                "data_files": [{"split": split, "path": f"data/{split}-*"} for split in split_rows],
            }
        ],
    )
    figures = [(f"`{k}`", v) for k, v in stats.items() if is_number(v) or isinstance(v, str)]
    breakdowns = "\n\n".join(
        f"`{k}`:\n\n{mapping_table(v)}" for k, v in stats.items() if k != "config" and isinstance(v, dict)
    )
    sizes = ", ".join(f"{split}: {rows} rows" for split, rows in split_rows.items())
    columns_text = ", ".join(f"`{c}`" for c in columns)
    recipe = yaml.safe_dump(config, sort_keys=True).strip() if config else "# not recorded"
    body = f"""
# {repo_id.split("/")[-1]}

{row_description} Made by ponder{f" for the `{task}` task" if task else ""} ({sizes}; columns {columns_text}).

## Figures

{table(("figure", "value"), figures) if figures else f"No `{STATS_FILE}` was found beside the data."}

{breakdowns}

## Configuration that produced it

```yaml
{recipe}
```

## How to load it

```python
from datasets import load_dataset

rows = load_dataset("{repo_id}", split="{next(iter(split_rows))}")
```
"""
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n{body}")
