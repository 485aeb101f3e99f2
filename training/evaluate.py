"""Evaluate stage: strategies × budgets on test problems, difficulty bins, the compute-optimal policy.

    ponder evaluate --config recipes/toy/evaluate.yaml
    accelerate launch --num_processes P -m ponder.training.evaluate --config recipes/toy/evaluate.yaml

Test problems are cut into shards of `shard_size`. Every part below that runs models on problems
(difficulty, each strategy run, the solver check, the large policy's answers) computes shard by
shard from the shard's own seed and writes each shard's rows atomically to
``runs/<part>/shard-NNNNN.json``, so a rerun skips finished shards, even inside a strategy run, and
the rows do not depend on how the work is split: under `accelerate launch` each process takes its
own shards, and the jobs of a split run (`shard_index`/`num_shards`, `ponder.training.core.shards`)
take theirs and stop after the sweep (steps 1–2); a run without a split then merges, checks and
reports. The main process merges the shards into the one report. A rerun whose checkpoints, problems
or settings would change finished rows is refused (`OutputFolder`; `CHANGEABLE_KEYS` may change).

1. Difficulty: `difficulty_samples` policy samples per problem give the oracle pass@1 (gold answers);
   the PRM's mean score over the first `probe_samples` of them is the predicted difficulty, the same
   estimate the solver's probe makes (no gold answers).
2. Sweep: every strategy at every budget 1, 2, 4, ... ≤ `max_budget` it can spend exactly, sharing
   samples across budgets only where valid (`ponder.inference.strategies`).
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

import functools
import json
import logging
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
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
from ponder.inference.engine import EngineConfig
from ponder.inference.generation import make_generator
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
from ponder.inference.tasks import TASK_NAMES, get_task
from ponder.training.core.configs import ConfigError, config_to_dict, parse_config, redact_command, require
from ponder.training.core.fingerprint import checkpoint_identity, identity_digest, stage_fingerprint
from ponder.training.core.logs import setup_logging
from ponder.training.core.output_folder import OVERWRITE_HELP, OutputFolder
from ponder.training.core.outputs import write_text_atomic
from ponder.training.core.problems import ProblemCheck, load_problems, skip_bad_rows_field
from ponder.training.core.shards import (
    JobSplitConfig,
    Worker,
    merge_shards,
    missing_note,
    process_state,
    report_split_job,
    run_shards,
    split_into_shards,
)
from ponder.training.reporting.flops_matched import greedy_rows, pretraining_record
from ponder.training.reporting.report import build_report, write_report

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
CHECKPOINT_KEYS = ("policy", "prm", "orm", "revision", "revision_verifier")
# keys a rerun may change: they change no finished part (runs are keyed by strategy and budget, the
# solver check by its budget and what it fits, the large policy's answers by its identity), or, the
# device, only where the models run
CHANGEABLE_KEYS = (
    "strategies",
    "max_budget",
    "difficulty_bins",
    "choice_rule",
    "compare_budget",
    "solver_check_budget",
    "large_policy",
    "device",
)
OUTPUTS = ("runs", "rows", "rows.jsonl", "compute_optimal.json", "report.json", "report.md", "*.png")
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
class EvaluateConfig(JobSplitConfig):
    """Checkpoints, test problems, strategies and budgets of an evaluation.

    `prm` ``"oracle"`` scores with the task's oracle step checker (toy world); `orm` and `revision`
    are optional, and strategies that need a missing one are skipped with a log line.
    `revision_verifier` (a revision ORM) scores revision attempts in place of the PRM. `large_policy`
    (optional) is a larger policy for the FLOPs-matched comparison, answering greedily. Test problems
    come from the task's generator, or from `problems_file` (a JSONL file, a saved dataset or a Hub
    dataset id, its `problems_split` and `problems_config`): all rows, or `max_problems` of them drawn
    at random with `problem_seed`, kept in file order.

    Every model is loaded on each process as the recipe's `EngineConfig` says; the K models an
    evaluation loads (policy, PRM, ORM, revision model, revision verifier, large policy: those
    configured) share each process's GPU, each with ``gpu_memory_utilization / K`` of it
    (`shared_engine`).
    """

    policy: str | None = field(
        default=None, metadata={"help": "policy checkpoint folder or Hub id that samples every solution (required)"}
    )
    prm: str | None = field(
        default=None,
        metadata={"help": "PRM checkpoint, or 'oracle' for the exact step checker of a toy task (required)"},
    )
    prm_kind: str | None = field(
        default=None,
        metadata={
            "help": "override the PRM's kind, e.g. policy_likelihood with the policy folder (the untrained baseline)"
        },
    )
    orm: str | None = field(
        default=None, metadata={"help": "ORM checkpoint for the orm_* strategies (unset: they are skipped)"}
    )
    revision: str | None = field(
        default=None, metadata={"help": "revision checkpoint for the revision_* strategies (unset: they are skipped)"}
    )
    revision_verifier: str | None = field(
        default=None,
        metadata={"help": "revision ORM that scores revision attempts in place of the PRM (unset: the PRM)"},
    )
    large_policy: str | None = field(
        default=None,
        metadata={"help": "larger policy answering greedily for the FLOPs-matched comparison (unset: no comparison)"},
    )
    task: str | None = field(
        default=None, metadata={"help": f"task of the test problems: {', '.join(TASK_NAMES)} (required)"}
    )
    levels: list[int] = field(
        default_factory=lambda: [1, 2, 3, 4, 5, 6],
        metadata={"help": "levels of generated test problems (unused with problems_file)"},
    )
    problems_per_level: int = field(
        default=20, metadata={"help": "generated test problems per level (unused with problems_file)"}
    )
    problem_seed: int = field(
        default=0, metadata={"help": "seed of the generated test problems and of the rows drawn from problems_file"}
    )
    problems_file: str | None = field(
        default=None,
        metadata={
            "help": "JSONL file, saved dataset folder or Hub dataset id of the test problems (unset: the generator)"
        },
    )
    problems_split: str = field(default="test", metadata={"help": "split of problems_file"})
    problems_config: str | None = field(default=None, metadata={"help": "config name of the Hub dataset problems_file"})
    max_problems: int | None = field(
        default=None, metadata={"help": "rows of problems_file drawn at random with problem_seed (unset: every row)"}
    )
    shard_size: int = field(
        default=32,
        metadata={
            "help": "test problems per shard: the unit of resuming and of splitting between processes "
            "and jobs, each shard drawing from its own seed (changing it changes the samples)"
        },
    )
    strategies: list[str] = field(
        default_factory=lambda: list(DEFAULT_STRATEGIES),
        metadata={
            "help": "strategies swept, e.g. bon_weighted, orm_bon_weighted, beam_m4, beam_sqrt, "
            "lookahead_k1_m4, dvts_m4, revision_l4"
        },
    )
    max_budget: int = field(
        default=64,
        metadata={"help": "largest budget N of the sweep, a power of two; budgets run 1, 2, 4, ... up to it"},
    )
    difficulty_samples: int = field(
        default=16, metadata={"help": "policy samples per problem whose oracle pass@1 is the problem's difficulty"}
    )
    probe_samples: int = field(
        default=4,
        metadata={
            "help": "first samples of those that the PRM scores for the predicted difficulty (1 to difficulty_samples)"
        },
    )
    difficulty_bins: int = field(
        default=5,
        metadata={"help": "quantile bins of difficulty, each given its own strategy by the compute-optimal policy"},
    )
    choice_rule: str = field(
        default="one_se",
        metadata={
            "help": "how a bin picks its strategy: one_se (the overall best unless another leads by over one "
            "standard error in the bin) or argmax"
        },
    )
    compare_budget: int = field(
        default=16,
        metadata={"help": "budget at which the report compares predicted-bin and oracle-bin compute-optimal accuracy"},
    )
    solver_check_budget: int = field(
        default=16,
        metadata={"help": "budget of the cross-validated solver check, its difficulty probe included (0: no check)"},
    )
    temperature: float = field(default=0.8, metadata={"help": "sampling temperature of every search"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling probability of every search (1: off)"})
    max_step_tokens: int = field(
        default=32, metadata={"help": "token cap of one step in the step-wise searches (beam, lookahead, DVTS)"}
    )
    max_solution_tokens: int = field(
        default=192,
        metadata={"help": "token cap of one whole solution (best-of-N, revisions, the large policy's answers)"},
    )
    aggregation: str | None = field(
        default=None,
        metadata={"help": "how step scores make a solution score: last, min, prod or mean (unset: the PRM's own)"},
    )
    seed: int = field(default=0, metadata={"help": "seed of the searches' sampling"})
    device: str | None = field(
        default=None, metadata={"help": "device of every model; unset: this process's (accelerate's: a GPU or the CPU)"}
    )
    output_dir: str = field(
        default="outputs/evaluate",
        metadata={"help": "folder for runs/, the rows, the compute-optimal policy and the report"},
    )
    overwrite_output_dir: bool = field(default=False, metadata={"help": OVERWRITE_HELP})
    skip_bad_rows: bool = skip_bad_rows_field()

    def __post_init__(self):
        super().__post_init__()
        require(self, "policy", "prm", "task")
        if self.problems_file is None and not hasattr(get_task(self.task), "generate"):
            raise ConfigError(f"problems_file: required, task {self.task!r} has no problem generator")
        power_of_two_budgets(self.max_budget)  # validates the cap
        for name in self.strategies:
            Strategy.parse(name)
        if self.choice_rule not in CHOICE_RULES:
            raise ValueError(f"choice_rule must be one of {CHOICE_RULES}, got {self.choice_rule!r}")
        if not 1 <= self.probe_samples <= self.difficulty_samples:
            raise ValueError(f"probe_samples must lie in 1..difficulty_samples, got {self.probe_samples}")

    def problems(self, task, check: ProblemCheck | None = None) -> list[dict]:
        """The test problems that pass `check`: the dataset's rows, or the generator's level by level."""
        check = check or ProblemCheck()
        if self.problems_file:
            source = (self.problems_file, self.problems_split, self.max_problems, self.problems_config)
            return load_problems(task, *source, self.problem_seed, check)
        generated = (
            p for level in self.levels for p in task.generate(self.problems_per_level, level, self.problem_seed)
        )
        return check.keep(task, ((f"the {self.task} generator", p) for p in generated))

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

    def shared_engine(self, engine: EngineConfig) -> EngineConfig:
        """`engine` with its ``gpu_memory_utilization`` split evenly between the models this evaluation loads."""
        verifiers = [None if self.prm == "oracle" else self.prm, self.orm]
        revision = [self.revision, self.revision_verifier] if self.revision else []
        models = sum(m is not None for m in [self.policy, *verifiers, *revision, self.large_policy])
        return replace(engine, gpu_memory_utilization=engine.gpu_memory_utilization / models)

    def output_folder(self, state, engine: EngineConfig) -> OutputFolder:
        """The evaluation's `OutputFolder`, fingerprinted by what its parts' rows depend on: this config but
        `CHANGEABLE_KEYS`, `engine`, the checkpoints and the problems file."""
        fingerprint = functools.partial(
            stage_fingerprint, self, engine, CHECKPOINT_KEYS, ("problems_file",), CHANGEABLE_KEYS
        )
        return OutputFolder(state, self, self.output_dir, fingerprint, OUTPUTS, self.overwrite_output_dir)


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


@dataclass
class ShardedParts:
    """The parts of an evaluation computed shard by shard over `problems`, each in ``runs_dir/<part>/``."""

    runs_dir: Path
    problems: list[dict]
    shard_size: int
    worker: Worker

    @property
    def total(self) -> int:
        return len(split_into_shards(self.problems, self.shard_size))

    def compute(self, part: str, compute: Callable[[int, list[dict]], list[dict]]) -> None:
        """Compute this worker's unfinished shards of `part`; `compute(index, problems)` gives a shard's rows."""

        def timed(index: int, problems) -> dict:
            start = time.monotonic()
            rows = compute(index, list(problems))
            return {"rows": rows, "stats": {"seconds": round(time.monotonic() - start, 2)}}

        computed = run_shards(self.problems, self.shard_size, self.runs_dir / part, timed, self.worker)
        if computed:
            logger.info("%s: worker %d computed %d shards", part, self.worker.index, computed)

    def merge(self, part: str, timings: dict, key: str | None = None) -> list[dict]:
        """All rows of `part` in shard order; its shards' compute seconds go to ``timings[key or part]``."""
        rows, stats = merge_shards(self.runs_dir / part, self.total)
        timings[key or part] = round(sum(s["seconds"] for s in stats), 1)
        return rows

    def missing(self, parts: list[str]) -> list[str]:
        """What is missing of `parts`, one note per part that lacks shards."""
        return [note for part in parts if (note := missing_note(self.runs_dir / part, self.total))]


def shard_tools(tools: Tools, index: int) -> Tools:
    """`tools` whose searches draw from shard `index`'s own seed."""
    seed = zlib.crc32(f"{tools.setup.seed}:shard{index}".encode())
    return replace(tools, setup=replace(tools.setup, seed=seed))


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


def fold_policies(rows: list[dict], difficulty: list[dict], config: EvaluateConfig) -> tuple[dict, dict]:
    """Each problem's fold, and per fold the policy fit (bins and choices) on the other fold only."""
    predicted = {d["id"]: d["predicted_score"] for d in difficulty}
    folds = assign_folds(quantile_binning(predicted, config.difficulty_bins).bins)
    policies = {}
    for fold in sorted(set(folds.values())):
        fitting = {i for i, f in folds.items() if f != fold}
        binning = quantile_binning({i: predicted[i] for i in fitting}, config.difficulty_bins, "predicted")
        fitting_rows = [r for r in rows if r["id"] in fitting]
        policies[fold] = fit_policy(fitting_rows, binning, config.probe_samples, rule=config.choice_rule)
    return folds, policies


def solver_check(problems: list[dict], folds: dict, policies: dict, tools: Tools, budget: int) -> list[dict]:
    """Rows of the solver on `problems`, each solved by the policy fit without its fold (`fold_policies`)."""
    solved = []
    for fold, policy in policies.items():
        held_out = [p for p in problems if folds[p["id"]] == fold]
        if held_out:
            solved += [row | {"fold": fold} for row in ComputeOptimalSolver(policy, tools).solve(held_out, budget)]
    return solved


def save_rows(output_dir: Path, rows: list[dict]) -> None:
    """All sweep rows as JSONL and as a `datasets` folder, in fixed columns."""
    from datasets import Dataset

    table = [{column: row.get(column) for column in ROW_COLUMNS} for row in rows]
    write_jsonl(output_dir / "rows.jsonl", table)
    Dataset.from_list(table).save_to_disk(str(output_dir / "rows"))


def evaluate(config: EvaluateConfig, engine: EngineConfig | None = None, command: str = "") -> dict | None:
    """Run the whole evaluation (module docstring); returns the report on the main process, else None."""
    start = time.monotonic()
    engine = config.shared_engine(engine or EngineConfig())
    state = process_state()
    worker = config.worker(state)
    output_dir = Path(config.output_dir)
    task = get_task(config.task)
    device = config.device or str(state.device)
    engine_seed = config.seed + worker.index
    with config.output_folder(state, engine) as folder:
        check = ProblemCheck.for_policy("policy", config.policy, config.max_solution_tokens, config.skip_bad_rows)
        problems = config.problems(task, check)
        tools = load_tools(
            task,
            **config.checkpoints(),
            device=device,
            engine=engine,
            engine_seed=engine_seed,
            **config.search_settings(),
        )
        strategies, skipped = available_strategies(config, tools)
        folder.loaded()
        parts = ShardedParts(output_dir / "runs", problems, config.shard_size, worker)
        logger.info("evaluating %d strategies on %d problems in %d shards", len(strategies), len(problems), parts.total)

        runs = plan_runs(strategies, power_of_two_budgets(config.max_budget))
        parts.compute("difficulty", lambda index, shard: difficulty_rows(shard, shard_tools(tools, index), config))
        for run in tqdm(runs, desc="strategy runs", disable=not state.is_local_main_process):
            parts.compute(run.key, lambda index, shard, run=run: execute(run, shard, shard_tools(tools, index)))
        state.wait_for_everyone()
        if config.num_shards > 1:
            if state.is_main_process:
                report_split_job(config, parts.missing(["difficulty", *(run.key for run in runs)]))
            return None
        timings: dict = {}
        difficulty = parts.merge("difficulty", timings)
        rows = [row for run in runs for row in parts.merge(run.key, timings)]

        solver_part = None
        if config.solver_check_budget:
            fitting = [config.choice_rule, str(config.difficulty_bins), *(run.key for run in runs)]  # what it fits
            sweep_id = zlib.crc32(" ".join(fitting).encode())
            solver_part = f"solver_check_b{config.solver_check_budget}_{sweep_id:08x}"
            folds, policies = fold_policies(rows, difficulty, config)
            budget = config.solver_check_budget
            parts.compute(
                solver_part,
                lambda index, shard: solver_check(shard, folds, policies, shard_tools(tools, index), budget),
            )
        large_part = None
        if config.large_policy:
            large_part = f"large_policy_greedy_{identity_digest(checkpoint_identity(config.large_policy))}"
            generator = functools.cache(
                lambda: make_generator(config.large_policy, engine, device=device, seed=engine_seed)
            )
            parts.compute(
                large_part, lambda _, shard: greedy_rows(shard, generator(), task, config.max_solution_tokens)
            )
        state.wait_for_everyone()
        if not state.is_main_process:
            return None

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
        solver_rows = parts.merge(solver_part, timings, "solver_check") if solver_part else []
        large = None
        if large_part:
            large = {
                "small": pretraining_record(config.policy),
                "large": pretraining_record(config.large_policy),
                "greedy": parts.merge(large_part, timings, "large_policy_greedy"),
            }
        timings["total_this_run"] = round(time.monotonic() - start, 1)
        parameters = {
            "policy": parameter_count(tools.setup.generator),
            "prm": parameter_count(tools.setup.verifier),
            "orm": parameter_count(tools.orm),
            "revision": parameter_count(tools.revision_generator),
            "revision_verifier": parameter_count(tools.revision_verifier),
        }
        report = build_report(
            config=config_to_dict(config, engine),
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
            skipped_problems=check.summary(),
        )
        write_report(output_dir, report)
        return report


CONFIG_TYPES = (EvaluateConfig, EngineConfig)  # what the stage's recipe and flags fill


def main(argv: list[str] | None = None) -> dict | None:
    setup_logging()
    argv = sys.argv[1:] if argv is None else argv
    config, engine = parse_config(CONFIG_TYPES, argv)
    report = evaluate(config, engine, command=" ".join(["ponder evaluate", *redact_command(argv)]))
    if report is not None:
        print(report["summary_markdown"], flush=True)
    return report


if __name__ == "__main__":
    main()
