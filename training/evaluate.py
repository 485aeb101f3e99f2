"""Evaluate stage: strategies × budgets on test problems, difficulty bins, the compute-optimal policy.

    ponder evaluate --config recipes/toy/evaluate.yaml

1. Difficulty: `difficulty_samples` policy samples per problem give the oracle pass@1 (gold answers);
   the PRM's mean score over the first `probe_samples` of them is the predicted difficulty, the same
   estimate the solver's probe makes (no gold answers).
2. Sweep: every strategy at every budget 1, 2, 4, ... ≤ `max_budget` it can spend exactly, sharing
   samples across budgets only where valid (`ponder.inference.strategies`). Each run's rows are
   written to ``runs/<key>.jsonl`` as it finishes; a rerun skips finished runs.
3. All rows go to ``rows.jsonl`` and the `datasets` folder ``rows/``, each with generations, generated
   tokens, verifier tokens and FLOPs (≈ 2·parameters·tokens).
4. The compute-optimal policy per binning (oracle and predicted quintiles, absolute thresholds, and
   one bin as the no-difficulty baseline), with 2-fold cross-validation; the predicted-bin policy,
   the deployable one, is saved as ``compute_optimal.json``.
5. Solver check: per fold, the policy fit on the other fold solves this fold's problems at
   `solver_check_budget`, its difficulty probe charged against the budget.
6. FLOPs-matched comparison when `large_policy` names a larger toy policy: its greedy answers on the
   same problems against this policy's compute-optimal accuracy at equal total FLOPs (`flops_matched`).
7. ``report.json``, ``report.md`` and plots (`evaluate_report`).
"""

from __future__ import annotations

import json
import logging
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from ponder.inference.compute_optimal import (
    CHOICE_RULES,
    ComputeOptimalSolver,
    assign_folds,
    cross_validate,
    fit_policy,
)
from ponder.inference.difficulty import (
    Binning,
    absolute_binning,
    oracle_pass_rate,
    predicted_score,
    quantile_binning,
)
from ponder.inference.search.best_of_n import sample_solutions
from ponder.inference.search.common import Searched
from ponder.inference.strategies import (
    Strategy,
    Tools,
    execute,
    load_tools,
    parameter_count,
    plan_runs,
    power_of_two_budgets,
)
from ponder.inference.tasks import get_task
from ponder.training.configs import config_to_dict, parse_config
from ponder.training.evaluate_report import build_report, write_report
from ponder.training.flops_matched import greedy_rows, pretraining_record
from ponder.training.outputs import write_json_atomic, write_text_atomic
from ponder.training.problems import load_problems

logger = logging.getLogger(__name__)

DEFAULT_STRATEGIES = [
    "bon_naive",
    "bon_majority",
    "bon_weighted",
    "orm_bon_weighted",
    "beam_m4",
    "beam_sqrt",
    "lookahead_k1_m4",
    "lookahead_k3_m4",
    "dvts_m4",
    "revision_l1",
    "revision_l4",
    "revision_l16",
]
RUN_SETTINGS = (  # what a finished run's rows depend on (besides its key: strategy, n, width, ...)
    "policy",
    "prm",
    "prm_kind",
    "orm",
    "revision",
    "revision_verifier",
    "task",
    "levels",
    "problems_per_level",
    "problem_seed",
    "problems_file",
    "max_problems",
    "difficulty_samples",
    "probe_samples",
    "temperature",
    "top_p",
    "max_step_tokens",
    "max_solution_tokens",
    "aggregation",
    "seed",
)
OTHER_RULE_BINNINGS = ("oracle", "predicted")  # reported beside, with the choice rule not configured
ROW_COLUMNS = (
    "id",
    "level",
    "strategy",
    "budget",
    "n",
    "answer",
    "correct",
    "finished",
    "generations",
    "generated_tokens",
    "verifier_tokens",
    "verifier_calls",
    "flops",
)


@dataclass
class EvaluateConfig:
    """Checkpoints, test problems, strategies and budgets of an evaluation.

    `prm` ``"oracle"`` scores with the task's oracle step checker (toy world); `orm` and `revision`
    are optional, and strategies that need a missing one are skipped with a log line.
    `revision_verifier` (a revision ORM) scores revision attempts in place of the PRM. `large_policy`
    (optional) is a larger policy for the FLOPs-matched comparison, answering greedily. Test problems
    come from the task's generator, or from the first `max_problems` rows of `problems_file` (a JSONL
    file, a saved dataset or a Hub dataset id, its `problems_split` and `problems_config`).
    """

    policy: str = "outputs/toy/policy"
    prm: str = "outputs/toy/prm"
    prm_kind: str | None = None
    orm: str | None = None
    revision: str | None = None
    revision_verifier: str | None = None
    large_policy: str | None = None
    task: str = "arith"
    levels: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6])
    problems_per_level: int = 20
    problem_seed: int = 0
    problems_file: str | None = None
    problems_split: str = "test"
    problems_config: str | None = None
    max_problems: int | None = None
    strategies: list[str] = field(default_factory=lambda: list(DEFAULT_STRATEGIES))
    max_budget: int = 64
    difficulty_samples: int = 16
    probe_samples: int = 4
    difficulty_bins: int = 5
    choice_rule: str = "one_se"
    compare_budget: int = 16
    solver_check_budget: int = 16
    temperature: float = 0.8
    top_p: float = 1.0
    max_step_tokens: int = 32
    max_solution_tokens: int = 192
    aggregation: str | None = None
    seed: int = 0
    device: str | None = None
    output_dir: str = "outputs/toy/evaluate"

    def __post_init__(self):
        power_of_two_budgets(self.max_budget)  # validates the cap
        for name in self.strategies:
            Strategy.parse(name)
        if self.choice_rule not in CHOICE_RULES:
            raise ValueError(f"choice_rule must be one of {CHOICE_RULES}, got {self.choice_rule!r}")
        if not 1 <= self.probe_samples <= self.difficulty_samples:
            raise ValueError(f"probe_samples must lie in 1..difficulty_samples, got {self.probe_samples}")

    def problems(self, task) -> list[dict]:
        if self.problems_file:
            return load_problems(task, self.problems_file, self.problems_split, self.max_problems, self.problems_config)
        return [p for level in self.levels for p in task.generate(self.problems_per_level, level, self.problem_seed)]

    def search_settings(self) -> dict:
        keys = ("temperature", "top_p", "max_step_tokens", "max_solution_tokens", "aggregation", "seed")
        return {key: getattr(self, key) for key in keys}

    def checkpoints(self) -> dict:
        return {
            "policy": self.policy,
            "prm": self.prm,
            "prm_kind": self.prm_kind,
            "orm": self.orm,
            "revision": self.revision,
            "revision_verifier": self.revision_verifier,
        }

    def check_resumable(self, output_dir: Path) -> None:
        """Record what the runs depend on; refuse to resume runs made with different settings."""
        record_path = output_dir / "runs" / "settings.json"
        settings = {key: getattr(self, key) for key in RUN_SETTINGS}
        if record_path.exists():
            recorded = json.loads(record_path.read_text())
            changed = sorted(key for key in RUN_SETTINGS if recorded.get(key) != settings[key])
            if changed:
                raise ValueError(
                    f"{output_dir} holds runs made with other {', '.join(changed)}; use a fresh output_dir"
                )
        write_json_atomic(record_path, settings)


def available_strategies(config: EvaluateConfig, tools: Tools) -> tuple[list[Strategy], dict[str, str]]:
    """The strategies that can run with the configured checkpoints, and why the others are skipped."""
    runnable, skipped = [], {}
    for strategy in map(Strategy.parse, config.strategies):
        reason = tools.missing_for(strategy)
        if reason:
            skipped[strategy.name] = reason
        else:
            runnable.append(strategy)
    for name, reason in skipped.items():
        logger.info("skipping strategy %s: %s", name, reason)
    return runnable, skipped


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(row) + "\n" for row in rows))


def difficulty_rows(problems: list[dict], tools: Tools, config: EvaluateConfig) -> list[dict]:
    """Per problem: oracle pass@1 of `difficulty_samples` samples, predicted score of the first `probe_samples`."""
    task = tools.setup.task
    searched = Searched(problems, tools.setup)
    samples = sample_solutions(searched, config.difficulty_samples, "difficulty", score=False)
    searched.score([c for per_problem in samples for c in per_problem[: config.probe_samples]])
    rows = []
    for problem, candidates in zip(problems, samples):
        probe = candidates[: config.probe_samples]
        correct = [c.answer is not None and task.check_answer(c.answer, problem["answer"]) for c in candidates]
        rows.append(
            {
                "id": problem["id"],
                "level": problem.get("level"),
                "pass_at_1": oracle_pass_rate(correct),
                "predicted_score": predicted_score([c.score for c in probe], [c.answer is not None for c in probe]),
                "generated_tokens": sum(c.generated_tokens for c in candidates),
                "verifier_tokens": sum(c.verifier_tokens for c in probe),
            }
        )
    return rows


def cached(path: Path, compute, timings: dict, key: str) -> list[dict]:
    """Rows from `path` when a previous run wrote them, else computed, written and timed."""
    if path.exists():
        logger.info("%s: done in an earlier run, loaded %s", key, path)
        return read_jsonl(path)
    start = time.monotonic()
    rows = compute()
    timings[key] = round(time.monotonic() - start, 1)
    write_jsonl(path, rows)
    logger.info("%s: %.1f s, wrote %s", key, timings[key], path)
    return rows


def binnings(difficulty: list[dict], n_bins: int) -> dict[str, Binning]:
    """Oracle and predicted quantile bins, absolute pass@1 bins, and a single bin (no difficulty) as baseline."""
    oracle = {d["id"]: d["pass_at_1"] for d in difficulty}
    predicted = {d["id"]: d["predicted_score"] for d in difficulty}
    return {
        "oracle": quantile_binning(oracle, n_bins, "oracle"),
        "predicted": quantile_binning(predicted, n_bins, "predicted"),
        "absolute": absolute_binning(oracle),
        "single": Binning("single", ("all",), (), {i: "all" for i in oracle}),
    }


def solver_check(
    problems: list[dict], rows: list[dict], difficulty: list[dict], tools: Tools, config: EvaluateConfig
) -> list[dict]:
    """Rows of the solver on each fold with the policy fit (bins and choices) on the other fold only."""
    predicted = {d["id"]: d["predicted_score"] for d in difficulty}
    folds = assign_folds(quantile_binning(predicted, config.difficulty_bins).bins)
    solved = []
    for fold in sorted(set(folds.values())):
        fitting = {i for i, f in folds.items() if f != fold}
        binning = quantile_binning({i: predicted[i] for i in fitting}, config.difficulty_bins, "predicted")
        policy = fit_policy(
            [r for r in rows if r["id"] in fitting], binning, config.probe_samples, rule=config.choice_rule
        )
        held_out = [p for p in problems if folds[p["id"]] == fold]
        solved += [
            row | {"fold": fold}
            for row in ComputeOptimalSolver(policy, tools).solve(held_out, config.solver_check_budget)
        ]
    return solved


def large_policy_greedy(config: EvaluateConfig, problems: list[dict], task) -> list[dict]:
    """The large policy's greedy answers to the test problems (one generation each)."""
    from ponder.inference.generation import make_generator

    generator = make_generator(config.large_policy, device=config.device)
    return greedy_rows(problems, generator, task, config.max_solution_tokens)


def save_rows(output_dir: Path, rows: list[dict]) -> None:
    """All sweep rows as JSONL and as a `datasets` folder, in fixed columns."""
    from datasets import Dataset

    table = [{column: row.get(column) for column in ROW_COLUMNS} for row in rows]
    write_jsonl(output_dir / "rows.jsonl", table)
    Dataset.from_list(table).save_to_disk(str(output_dir / "rows"))


def evaluate(config: EvaluateConfig, command: str = "") -> dict:
    """Run the whole evaluation (module docstring); returns the report."""
    start = time.monotonic()
    output_dir = Path(config.output_dir)
    runs_dir = output_dir / "runs"
    config.check_resumable(output_dir)
    task = get_task(config.task)
    tools = load_tools(task, **config.checkpoints(), device=config.device, **config.search_settings())
    strategies, skipped = available_strategies(config, tools)
    problems = config.problems(task)
    logger.info("evaluating %d strategies on %d test problems", len(strategies), len(problems))
    timings_path = output_dir / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}

    difficulty = cached(
        runs_dir / "difficulty.jsonl", lambda: difficulty_rows(problems, tools, config), timings, "difficulty"
    )
    budgets = power_of_two_budgets(config.max_budget)
    runs = plan_runs(strategies, budgets)
    rows = []
    for run in tqdm(runs, desc="strategy runs"):
        rows += cached(runs_dir / f"{run.key}.jsonl", lambda run=run: execute(run, problems, tools), timings, run.key)
        write_json_atomic(timings_path, timings)
    save_rows(output_dir, rows)

    bins = binnings(difficulty, config.difficulty_bins)
    cv = {name: cross_validate(rows, b.bins, assign_folds(b.bins), config.choice_rule) for name, b in bins.items()}
    other_rule = next(rule for rule in CHOICE_RULES if rule != config.choice_rule)
    other_cv = {
        name: cross_validate(rows, bins[name].bins, assign_folds(bins[name].bins), other_rule)
        for name in OTHER_RULE_BINNINGS
    }
    settings = {"task": config.task, "checkpoints": config.checkpoints(), "search": config.search_settings()}
    policy = fit_policy(rows, bins["predicted"], config.probe_samples, settings, config.choice_rule)
    policy.save(output_dir / "compute_optimal.json")
    solver_rows = []
    if config.solver_check_budget:
        sweep_id = zlib.crc32(" ".join([config.choice_rule, *(run.key for run in runs)]).encode())  # what it fits
        solver_rows = cached(
            runs_dir / f"solver_check_b{config.solver_check_budget}_{sweep_id:08x}.jsonl",
            lambda: solver_check(problems, rows, difficulty, tools, config),
            timings,
            "solver_check",
        )
    large = None
    if config.large_policy:
        large = {
            "small": pretraining_record(config.policy),
            "large": pretraining_record(config.large_policy),
            "greedy": cached(
                runs_dir / f"large_policy_greedy_{zlib.crc32(config.large_policy.encode()):08x}.jsonl",
                lambda: large_policy_greedy(config, problems, task),
                timings,
                "large_policy_greedy",
            ),
        }
    timings["total_this_run"] = round(time.monotonic() - start, 1)
    write_json_atomic(timings_path, timings)
    parameters = {
        "policy": parameter_count(tools.setup.generator),
        "prm": parameter_count(tools.setup.verifier),
        "orm": parameter_count(tools.orm),
        "revision": parameter_count(tools.revision_generator),
        "revision_verifier": parameter_count(tools.revision_verifier),
    }
    report = build_report(
        config=config_to_dict(config),
        command=command,
        rows=rows,
        difficulty=difficulty,
        bins=bins,
        cv=cv,
        other_rule=other_rule,
        other_rule_cv=other_cv,
        solver_rows=solver_rows,
        skipped=skipped,
        parameters=parameters,
        timings=timings,
        large=large,
    )
    write_report(output_dir, report)
    return report


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    (config,) = parse_config((EvaluateConfig,), argv)
    report = evaluate(config, command="ponder evaluate " + " ".join(argv))
    print(report["summary_markdown"], flush=True)
    return report


if __name__ == "__main__":
    main()
