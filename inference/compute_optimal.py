"""The compute-optimal policy (Snell et al.): per difficulty bin and budget, the strategy that does best.

Fitting reads result rows ``{id, strategy, budget, correct, generated_tokens, verifier_tokens}`` and a `Binning` of
their problems. Two-fold cross-validation estimates how well the choice generalises: the problems of
every bin are split into two folds; for each fold the strategy is chosen per bin on the *other* fold
and scored on this one, and the CV accuracy is the mean over all problems, each scored while its own
fold was held out. The saved policy is chosen on all problems and records the CV accuracy beside.

Two choice rules (`CHOICE_RULES`). ``argmax`` takes each bin's most accurate strategy. ``one_se``
(the default) starts from the strategy most accurate over all bins and moves a bin to its own best
only when that one leads it *within the bin* by more than one standard error of the paired
per-problem difference (Breiman's one-standard-error rule): with a few dozen problems per bin and
fold, an argmax often picks a strategy that was lucky on the choosing fold.

`ComputeOptimalSolver.solve(rows, budget)` runs the policy on new problems: a probe of a few sampled
solutions, scored by the PRM, estimates each problem's difficulty (its samples count against the
budget); the problem's bin then picks the strategy. A chosen PRM best-of-N reuses the probe samples
and draws the rest of the budget; any other strategy runs at the largest budget it can spend exactly
within what the probe left (beam search with M=4 at 12 of 16 after a 4-sample probe).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ponder.inference.difficulty import Binning, predicted_score, tie_key
from ponder.inference.engine import EngineConfig
from ponder.inference.metrics import paired_difference
from ponder.inference.search.best_of_n import sample_solutions
from ponder.inference.search.common import Searched
from ponder.inference.search.selection import select_answer
from ponder.inference.strategies import (
    Strategy,
    Tools,
    estimate_flops,
    execute,
    load_tools,
    parameter_count,
    plan_runs,
)
from ponder.inference.tasks import get_task

FOLDS = 2
CHOICE_RULES = ("one_se", "argmax")
Outcomes = dict[int, dict[str, dict[str, tuple[bool, int]]]]  # budget → strategy → id → (correct, tokens)


def outcomes_of(rows: list[dict]) -> Outcomes:
    """Correctness and tokens (generated + verifier) per budget, strategy and problem; repeats are errors."""
    table: Outcomes = defaultdict(lambda: defaultdict(dict))
    for row in rows:
        per_problem = table[row["budget"]][row["strategy"]]
        if row["id"] in per_problem:
            raise ValueError(
                f"two rows for problem {row['id']!r}, strategy {row['strategy']!r}, budget {row['budget']}"
            )
        per_problem[row["id"]] = (bool(row["correct"]), row["generated_tokens"] + row["verifier_tokens"])
    return table


def assign_folds(bins: dict[str, str], folds: int = FOLDS) -> dict[str, int]:
    """Fold of each problem: bin by bin, problems in a stable pseudo-random order are dealt in turn.

    The deal runs on across bins, so every bin splits as evenly as it can and the folds stay balanced.
    """
    order = sorted(bins, key=lambda i: (bins[i], tie_key(i), i))
    return {problem_id: position % folds for position, problem_id in enumerate(order)}


def best_strategy(at_budget: dict[str, dict[str, tuple[bool, int]]], ids: list[str]) -> tuple[str, float]:
    """The strategy with the highest accuracy on `ids` (ties: fewer tokens generated and read, then name)."""
    ranked = []
    for strategy, per_problem in at_budget.items():
        if all(i in per_problem for i in ids):
            accuracy = sum(per_problem[i][0] for i in ids) / len(ids)
            tokens = sum(per_problem[i][1] for i in ids) / len(ids)
            ranked.append((-accuracy, tokens, strategy))
    if not ranked:
        raise ValueError("no strategy has rows for all the problems it would be chosen on")
    accuracy, _, strategy = min(ranked)
    return strategy, -accuracy


def choose_strategy(
    at_budget: dict[str, dict[str, tuple[bool, int]]], ids: list[str], pooled_ids: list[str], rule: str
) -> str:
    """The strategy for a bin whose problems are `ids`, by `rule` (module docstring); `pooled_ids` are all bins'."""
    best, _ = best_strategy(at_budget, ids)
    if rule == "argmax":
        return best
    if rule != "one_se":
        raise ValueError(f"unknown choice rule {rule!r}; use one of {CHOICE_RULES}")
    pooled, _ = best_strategy(at_budget, pooled_ids)
    if best == pooled or len(ids) < 2:
        return pooled
    gain, error = paired_difference([at_budget[best][i][0] for i in ids], [at_budget[pooled][i][0] for i in ids])
    return best if gain > error else pooled


def cross_validate(
    rows: list[dict], bins: dict[str, str], folds: dict[str, int], rule: str = "one_se"
) -> dict[int, dict]:
    """Per budget: CV accuracy, and per held-out fold and bin the strategy chosen on the other folds by `rule`.

    A bin that is empty in the choosing folds falls back to the choice over all their problems.
    """
    table = outcomes_of(rows)
    missing = sorted({r["id"] for r in rows} - set(bins))
    if missing:
        raise ValueError(f"problems without a difficulty bin: {missing[:5]}")
    results = {}
    for budget in sorted(table):
        at_budget = table[budget]
        correct, choices = 0, []
        for fold in sorted(set(folds.values())):
            choosing = [i for i in bins if folds[i] != fold]
            if not choosing:
                raise ValueError("cross-validation needs problems in at least two folds")
            for label in sorted(set(bins.values())):
                scored = [i for i in bins if folds[i] == fold and bins[i] == label]
                if not scored:
                    continue
                chosen_on = [i for i in choosing if bins[i] == label] or choosing
                strategy = choose_strategy(at_budget, chosen_on, choosing, rule)
                hits = sum(at_budget[strategy][i][0] for i in scored)
                correct += hits
                choices.append(
                    {
                        "held_out_fold": fold,
                        "bin": label,
                        "strategy": strategy,
                        "chosen_on": sorted(chosen_on),
                        "scored_on": sorted(scored),
                        "accuracy": hits / len(scored),
                    }
                )
        results[budget] = {"accuracy": correct / len(bins), "choices": choices}
    return results


@dataclass
class ComputeOptimalPolicy:
    """Per budget and bin, the chosen strategy; saved as ``compute_optimal.json``."""

    binning: Binning
    probe_samples: int
    choices: dict[int, dict[str, dict]]
    cv_accuracy: dict[int, float]
    settings: dict = field(default_factory=dict)  # {task, checkpoints: {policy, prm, orm, revision}, search: {...}}
    choice_rule: str = "one_se"

    def choice(self, label: str, budget: int) -> Strategy:
        """The strategy for bin `label` at the largest fitted budget not above `budget`."""
        fitted = [b for b in self.choices if b <= budget]
        if not fitted:
            raise ValueError(f"budget {budget} is below the smallest fitted budget {min(self.choices)}")
        return Strategy.parse(self.choices[max(fitted)][label]["strategy"])

    def to_dict(self) -> dict:
        return {
            "binning": self.binning.to_dict(),
            "probe_samples": self.probe_samples,
            "folds": FOLDS,
            "choice_rule": self.choice_rule,
            "settings": self.settings,
            "budgets": {
                str(budget): {"cv_accuracy": self.cv_accuracy.get(budget), "bins": bins}
                for budget, bins in sorted(self.choices.items())
            },
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ComputeOptimalPolicy:
        data = json.loads(Path(path).read_text())
        budgets = {int(b): entry for b, entry in data["budgets"].items()}
        return cls(
            Binning.from_dict(data["binning"]),
            data["probe_samples"],
            {b: entry["bins"] for b, entry in budgets.items()},
            {b: entry["cv_accuracy"] for b, entry in budgets.items() if entry["cv_accuracy"] is not None},
            data.get("settings", {}),
            data.get("choice_rule", "argmax"),  # files written before the rule was recorded used argmax
        )


def fit_policy(
    rows: list[dict], binning: Binning, probe_samples: int, settings: dict | None = None, rule: str = "one_se"
) -> ComputeOptimalPolicy:
    """Choose per bin and budget on all problems of `binning` by `rule`; CV accuracy from `cross_validate`."""
    bins = binning.bins
    cv = cross_validate(rows, bins, assign_folds(bins), rule)
    table = outcomes_of(rows)
    choices = {}
    for budget, at_budget in sorted(table.items()):
        choices[budget] = {}
        for label in binning.labels:
            ids = [i for i, b in bins.items() if b == label] or list(bins)
            strategy = choose_strategy(at_budget, ids, list(bins), rule)
            accuracy = sum(at_budget[strategy][i][0] for i in ids) / len(ids)
            params = Strategy.parse(strategy).params(budget)
            choices[budget][label] = {
                "strategy": strategy,
                "params": params,
                "accuracy": accuracy,
                "problems": len(ids),
            }
    cv_accuracy = {budget: result["accuracy"] for budget, result in cv.items()}
    return ComputeOptimalPolicy(binning, probe_samples, choices, cv_accuracy, dict(settings or {}), rule)


def load_solver(
    path: str | Path, device: str | None = None, engine: EngineConfig | None = None, seed: int = 0
) -> ComputeOptimalSolver:
    """A solver from a saved ``compute_optimal.json``, with the checkpoints and search settings it names,
    its models loaded on `device` as `engine` says (transformers by default; vLLM with ``backend="vllm"``),
    generators seeded with `seed`."""
    policy = ComputeOptimalPolicy.load(path)
    settings = policy.settings
    checkpoints, search = settings["checkpoints"], settings["search"]
    tools = load_tools(
        get_task(settings["task"]), **checkpoints, device=device, engine=engine, engine_seed=seed, **search
    )
    return ComputeOptimalSolver(policy, tools)


class ComputeOptimalSolver:
    """Answers problems at a budget with a fitted policy (see module docstring)."""

    def __init__(self, policy: ComputeOptimalPolicy, tools: Tools):
        self.policy = policy
        self.tools = tools
        self.parameters = (parameter_count(tools.setup.generator), parameter_count(tools.setup.verifier))

    def solve(self, rows: list[dict], budget: int) -> list[dict]:
        """One row per problem ``{id, strategy, budget, generations, difficulty_bin, probe_score, ...}``.

        `rows` are problems ``{id, problem, answer?}``; without a gold answer `correct` is None.
        `run_budget` is what the chosen strategy spent after the probe.
        """
        probe_n = min(self.policy.probe_samples, budget)
        probe = sample_solutions(Searched(rows, self.tools.setup), probe_n, "probe")
        scores = [predicted_score([c.score for c in cs], [c.answer is not None for c in cs]) for cs in probe]
        labels = [self.policy.binning.label_of(s) for s in scores]
        plans: dict[tuple[Strategy, int | None], list[int]] = defaultdict(list)
        for problem, label in enumerate(labels):
            plans[self._plan(label, budget, budget - probe_n)].append(problem)
        results: list[dict | None] = [None] * len(rows)
        for (strategy, run_budget), problems in plans.items():
            subset = [rows[p] for p in problems]
            if run_budget is None:
                solved = self._best_of_n_with_probe(subset, [probe[p] for p in problems], strategy, budget - probe_n)
            else:
                (run,) = plan_runs([strategy], [run_budget])
                solved = execute(run, subset, self.tools)
            for problem, row in zip(problems, solved):
                results[problem] = self._with_probe(row, probe[problem], budget, labels[problem], scores[problem])
        return results

    def _plan(self, label: str, budget: int, remaining: int) -> tuple[Strategy, int | None]:
        """The strategy and the budget it runs at; None means PRM best-of-N that reuses the probe."""
        strategy = self.policy.choice(label, budget)
        if strategy.kind == "best_of_n" and strategy.verifier == "prm":
            return strategy, None
        spendable = next((b for b in range(remaining, 0, -1) if strategy.params(b) is not None), None)
        if spendable:
            return strategy, spendable
        return Strategy.parse("bon_weighted"), None

    def _best_of_n_with_probe(self, rows: list[dict], probe, strategy: Strategy, extra: int) -> list[dict]:
        """Best-of-N over the probe samples plus `extra` new ones per problem (all i.i.d. samples);
        the rows charge the new samples only."""
        searched = Searched(rows, self.tools.setup)
        more = sample_solutions(searched, extra, "best_of_n") if extra else [[] for _ in rows]
        results = []
        for problem, new in enumerate(more):
            candidates = probe[problem] + new
            answer = select_answer([c.answer for c in candidates], [c.score for c in candidates], strategy.selection)
            spent = {
                "generated_tokens": sum(c.generated_tokens for c in new),
                "verifier_tokens": sum(c.verifier_tokens for c in new),
                "verifier_calls": len(new),
            }
            row = searched.result_row(problem, strategy.name, extra, answer, n=len(candidates), **spent)
            results.append(row | {"generations": extra, "flops": self._flops(row)})
        return results

    def _flops(self, row: dict) -> int | None:
        policy_parameters, verifier_parameters = self.parameters
        return estimate_flops(
            [(row["generated_tokens"], policy_parameters), (row["verifier_tokens"], verifier_parameters)]
        )

    def _with_probe(self, row: dict, probe, budget: int, label: str, score: float) -> dict:
        """A strategy's row charged with the probe's compute and labelled with its difficulty estimate."""
        charged = {
            "generated_tokens": row["generated_tokens"] + sum(c.generated_tokens for c in probe),
            "verifier_tokens": row["verifier_tokens"] + sum(c.verifier_tokens for c in probe),
        }
        probe_flops = self._flops({key: charged[key] - row[key] for key in charged})
        return (
            row
            | charged
            | {
                "strategy": f"compute_optimal/{row['strategy']}",
                "run_budget": row["budget"],
                "budget": budget,
                "generations": row["generations"] + len(probe),
                "verifier_calls": row["verifier_calls"] + len(probe),
                "flops": None if None in (row["flops"], probe_flops) else row["flops"] + probe_flops,
                "difficulty_bin": label,
                "probe_score": score,
            }
        )
