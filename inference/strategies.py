"""Test-time strategies by name: the budgets each spends exactly, its hyper-parameters there, running it.

Names (budget N counts generations, Snell et al.'s unit):

- ``bon_naive``, ``bon_majority``, ``bon_weighted``: best-of-N; ``orm_bon_naive``/``orm_bon_weighted``
  score with the ORM instead of the PRM;
- ``beam_m<M>``: beam search with N beams of width M; ``beam_sqrt``: width √N (N = 4, 16, 64, ...);
  the suffix ``_distinct`` (``beam_m4_distinct``) keeps only different partial solutions each round;
- ``lookahead_k<k>_m<M>``: beam search whose steps are scored after k greedy steps: N/(k+1) beams;
- ``dvts_m<M>``: N/M diverse verifier subtrees;
- ``revision_l<L>`` / ``revision_l<L>_majority``: N/L parallel chains of L revisions each, answer by
  hierarchical verifier selection or flat majority (needs a revision model).

A sweep groups the work into `Run`s, sharing samples only where that is statistically valid: one
best-of-N pass serves every budget and selection (the first b of N i.i.d. samples are a best-of-b
run); one revision run of cap/L chains serves every budget L·P (its chains are i.i.d.); a tree search
runs once per budget (a small tree is no prefix of a large one), shared only by strategies with the
same hyper-parameters there (``beam_sqrt`` at N=16 is ``beam_m4``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from ponder.inference.engine import EngineConfig
from ponder.inference.generation import make_generator
from ponder.inference.revision import (
    RevisionFormat,
    load_revision_format,
    run_chains,
    score_attempts,
    select_from_chains,
)
from ponder.inference.search import SearchSetup, beam_search, best_of_n, dvts, lookahead_search
from ponder.inference.search.common import Searched
from ponder.inference.verifiers import OracleVerifier, load_verifier

_PATTERNS = {
    "best_of_n": re.compile(r"^(?P<orm>orm_)?bon_(?P<selection>naive|majority|weighted)$"),
    "beam": re.compile(r"^beam_(?:m(?P<width>[1-9][0-9]*)|sqrt)(?P<distinct>_distinct)?$"),
    "lookahead": re.compile(r"^lookahead_k(?P<k>[1-9][0-9]*)_m(?P<width>[1-9][0-9]*)$"),
    "dvts": re.compile(r"^dvts_m(?P<width>[1-9][0-9]*)$"),
    "revision": re.compile(r"^revision_l(?P<length>[1-9][0-9]*)(?P<majority>_majority)?$"),
}


@dataclass(frozen=True)
class Strategy:
    """A named strategy (see module docstring); `width` 0 means √N."""

    name: str
    kind: str
    selection: str = "weighted"
    verifier: str = "prm"
    width: int = 0
    k: int = 0
    length: int = 0
    distinct: bool = False

    @classmethod
    def parse(cls, name: str) -> Strategy:
        for kind, pattern in _PATTERNS.items():
            match = pattern.match(name)
            if match is None:
                continue
            fields = {key: value for key, value in match.groupdict().items() if value is not None}
            if kind == "best_of_n":
                verifier = "orm" if fields.get("orm") else "prm"
                if verifier == "orm" and fields["selection"] == "majority":
                    break
                return cls(name, kind, selection=fields["selection"], verifier=verifier)
            if kind == "revision":
                selection = "majority" if fields.get("majority") else "hierarchical"
                return cls(name, kind, selection=selection, length=int(fields["length"]))
            return cls(
                name, kind, width=int(fields.get("width", 0)), k=int(fields.get("k", 0)), distinct="distinct" in fields
            )
        raise ValueError(
            f"unknown strategy {name!r}: use bon_<naive|majority|weighted>, orm_bon_<naive|weighted>, "
            "beam_m<M>[_distinct], beam_sqrt[_distinct], lookahead_k<k>_m<M>, dvts_m<M>, revision_l<L>[_majority]"
        )

    @property
    def generations_per_beam(self) -> int:
        return self.k + 1 if self.kind == "lookahead" else 1

    def params(self, budget: int) -> dict | None:
        """Hyper-parameters that spend exactly `budget` generations, or None when none do."""
        if budget < 1:
            return None
        if self.kind == "best_of_n":
            return {"n": budget}
        if self.kind == "revision":
            chains, rest = divmod(budget, self.length)
            return {"chains": chains, "length": self.length} if chains and not rest else None
        n, rest = divmod(budget, self.generations_per_beam)
        width = self.width or math.isqrt(n)
        if rest or n < width or n % width or (not self.width and (width < 2 or width * width != n)):
            return None
        return (
            {"n": n, "width": width}
            | ({"k": self.k} if self.kind == "lookahead" else {})
            | ({"distinct": 1} if self.distinct else {})
        )

    def budgets(self, budgets: list[int]) -> list[int]:
        """The budgets among `budgets` this strategy can spend exactly."""
        return [b for b in budgets if self.params(b) is not None]


def power_of_two_budgets(cap: int) -> list[int]:
    """1, 2, 4, ... up to `cap` (itself a power of two)."""
    if cap < 1 or cap & (cap - 1):
        raise ValueError(f"the budget cap must be a power of two, got {cap}")
    return [2**i for i in range(cap.bit_length())]


@dataclass(frozen=True)
class Run:
    """One search call and the strategies and budgets whose rows it yields; `key` names it on disk."""

    key: str
    kind: str
    params: tuple[tuple[str, int], ...]
    budgets: tuple[int, ...]
    strategies: tuple[Strategy, ...]


def plan_runs(strategies: list[Strategy], budgets: list[int]) -> list[Run]:
    """The runs that give every strategy's rows at each of `budgets` it can spend (module docstring)."""
    runs: dict[str, Run] = {}

    def add(key: str, kind: str, params: dict, run_budgets: list[int], strategy: Strategy) -> None:
        known = runs.get(key)
        members = (*known.strategies, strategy) if known else (strategy,)
        runs[key] = Run(key, kind, tuple(params.items()), tuple(run_budgets), members)

    for strategy in strategies:
        spendable = strategy.budgets(budgets)
        if not spendable:
            continue
        if strategy.kind == "best_of_n":
            prefix = "orm_" if strategy.verifier == "orm" else ""
            add(f"{prefix}bon_n{max(spendable)}", "best_of_n", {"n": max(spendable)}, spendable, strategy)
        elif strategy.kind == "revision":
            params = strategy.params(max(spendable))
            add(f"revision_c{params['chains']}_l{strategy.length}", "revision", params, spendable, strategy)
        else:
            for budget in spendable:
                params = strategy.params(budget)
                key = f"{strategy.kind}_" + "_".join(f"{name[0]}{value}" for name, value in params.items())
                add(key, strategy.kind, params, [budget], strategy)
    return list(runs.values())


@dataclass
class Tools:
    """What strategies run on: the policy and PRM (`setup`), and optionally an ORM and a revision model.

    `revision_verifier` (a revision ORM) scores revision attempts for hierarchical selection; without
    one the PRM does.
    """

    setup: SearchSetup
    orm: object | None = None
    revision_generator: object | None = None
    revision_format: RevisionFormat | None = None
    revision_verifier: object | None = None

    @property
    def attempt_verifier(self):
        """The verifier that scores revision attempts."""
        return self.revision_verifier or self.setup.verifier

    def missing_for(self, strategy: Strategy) -> str | None:
        """Why `strategy` cannot run with these tools, or None when it can."""
        if strategy.verifier == "orm" and self.orm is None:
            return "no ORM checkpoint configured (orm)"
        if strategy.kind == "revision" and (self.revision_generator is None or self.revision_format is None):
            return "no revision checkpoint configured (revision)"
        return None


def load_tools(
    task,
    policy: str,
    prm: str,
    prm_kind: str | None = None,
    orm: str | None = None,
    revision: str | None = None,
    revision_verifier: str | None = None,
    device: str | None = None,
    engine: EngineConfig | None = None,
    engine_seed: int = 0,
    aggregation: str | None = None,
    **search_settings,
) -> Tools:
    """Tools from checkpoint folders; `prm` ``"oracle"`` is the task's oracle step checker (toy world).

    `prm_kind` overrides the PRM's kind (``policy_likelihood`` with the policy folder is the untrained
    baseline); `aggregation` defaults to the PRM's own; `search_settings` fill `SearchSetup`;
    `revision_verifier` (used with `revision`) is a revision ORM checkpoint. Every model loads on
    `device` as `engine` says, generators seeded with `engine_seed`.
    """

    def verifier_at(path: str, **overrides):
        return load_verifier(path, device=device, engine=engine, **overrides)

    def generator_at(path: str):
        return make_generator(path, engine, device=device, seed=engine_seed)

    overrides = {"kind": prm_kind} if prm_kind else {}
    verifier = OracleVerifier(task) if prm == "oracle" else verifier_at(prm, **overrides)
    setup = SearchSetup(
        generator_at(policy), verifier, task, aggregation=aggregation or verifier.aggregation, **search_settings
    )
    tools = Tools(setup, orm=verifier_at(orm) if orm else None)
    if revision:
        tools.revision_format = load_revision_format(revision)
        tools.revision_generator = generator_at(revision)
        tools.revision_verifier = verifier_at(revision_verifier) if revision_verifier else None
    return tools


def parameter_count(component) -> int | None:
    """Parameters of a generator's or verifier's torch model; None when it has none to count (vLLM)."""
    model = getattr(component, "model", None)
    return None if model is None else sum(p.numel() for p in model.parameters())


def estimate_flops(tokens_and_parameters: list[tuple[int, int | None]]) -> int | None:
    """≈ 2·parameters·tokens summed over models (prompt prefill not counted); None if a model is uncounted."""
    total = 0
    for tokens, parameters in tokens_and_parameters:
        if tokens:
            if parameters is None:
                return None
            total += 2 * parameters * tokens
    return total


def execute(run: Run, rows: list[dict], tools: Tools) -> list[dict]:
    """Rows ``{id, strategy, budget, generations, flops, ...}`` for every strategy and budget of `run`."""
    params = dict(run.params)
    setup = tools.setup
    generator, verifier = setup.generator, setup.verifier
    if run.kind == "best_of_n":
        if run.strategies[0].verifier == "orm":
            verifier = tools.orm
            setup = replace(setup, verifier=verifier)
        names = {s.selection: s.name for s in run.strategies}
        results = best_of_n(rows, setup, n=params["n"], budgets=list(run.budgets), selections=list(names))
        for row in results:
            row["strategy"] = names[row["strategy"].removeprefix("bon_")]
    elif run.kind == "revision":
        generator, verifier = tools.revision_generator, tools.attempt_verifier
        results = _revision_rows(run, rows, tools)
    else:
        search = {"beam": beam_search, "lookahead": lookahead_search, "dvts": dvts}[run.kind]
        searched = search(rows, setup, **params)
        results = [row | {"strategy": s.name} for s in run.strategies for row in searched]
    generator_parameters, verifier_parameters = parameter_count(generator), parameter_count(verifier)
    for row in results:
        row["generations"] = row["budget"]
        spent = [(row["generated_tokens"], generator_parameters), (row["verifier_tokens"], verifier_parameters)]
        row["flops"] = estimate_flops(spent)
    return results


def _revision_rows(run: Run, rows: list[dict], tools: Tools) -> list[dict]:
    """Rows of a revision run: budget L·P uses the first P chains of each problem."""
    setup, params = tools.setup, dict(run.params)
    per_problem = run_chains(
        tools.revision_generator,
        setup.task,
        rows,
        chains=params["chains"],
        length=params["length"],
        fmt=tools.revision_format,
        temperature=setup.temperature,
        top_p=setup.top_p,
        max_new_tokens=setup.max_solution_tokens,
        seed=setup.seed,
    )
    if any(s.selection == "hierarchical" for s in run.strategies):
        score_attempts(tools.attempt_verifier, setup.task, rows, per_problem, setup.aggregation)
    searched = Searched(rows, setup)
    results = []
    for problem, chains in enumerate(per_problem):
        for budget in run.budgets:
            used = chains[: budget // params["length"]]
            attempts = [a for chain in used for a in chain]
            for strategy in run.strategies:
                verified = strategy.selection == "hierarchical"
                results.append(
                    searched.result_row(
                        problem,
                        strategy.name,
                        budget,
                        select_from_chains(used, strategy.selection),
                        n=budget,
                        generated_tokens=sum(a.num_tokens for a in attempts),
                        verifier_tokens=sum(a.verifier_tokens for a in attempts) if verified else 0,
                        verifier_calls=len(attempts) if verified else 0,
                    )
                )
    return results
