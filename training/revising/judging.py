"""Judging a revision model turn by turn against no-context controls at the same temperature.

A chain of `turns` sequential attempts per held-out problem: pass@1 at each turn, and the rate at
which a correct attempt is followed by a wrong one (correct→wrong) and the reverse. The same figures
for controls that sample every turn without context (the base policy, and the revision model with
an empty context) are what independent resampling gives: a revision gain counts only above them.
Every system runs on the same problems, so each turn's gain over a control comes with the standard
error of the difference paired by problem.
"""

from __future__ import annotations

from dataclasses import replace

from ponder.inference.metrics import paired_difference
from ponder.inference.revision import RevisionFormat, run_chains


def graded_chains(task, rows: list[dict], per_problem) -> list[list[bool]]:
    """Every chain of `rows` as the correctness of its attempts, chains in problem order."""
    return [
        [a.is_correct(task, row["answer"]) for a in chain] for row, chains in zip(rows, per_problem) for chain in chains
    ]


def turn_figures(chains: list[list[bool]]) -> dict:
    """pass@1 per turn and the transition rates between consecutive turns, over graded `chains`."""
    turns = len(chains[0])

    def rate(turn: int, before: bool) -> float | None:
        pairs = [chain[turn] for chain in chains if chain[turn - 1] == before]
        if not pairs:
            return None
        return round(sum(now != before for now in pairs) / len(pairs), 4)

    return {
        "pass_at_1_per_turn": [round(sum(c[t] for c in chains) / len(chains), 4) for t in range(turns)],
        "correct_to_wrong_per_turn": [rate(t, True) for t in range(1, turns)],
        "wrong_to_correct_per_turn": [rate(t, False) for t in range(1, turns)],
    }


def gains_per_turn(chains: list[list[bool]], control: list[list[bool]]) -> list[dict]:
    """Each turn's pass@1 gain of `chains` over the `control` chains of the same problems, with its paired error."""
    gains = []
    for turn in range(len(chains[0])):
        gain, error = paired_difference([c[turn] for c in chains], [c[turn] for c in control])
        gains.append({"gain": round(gain, 4), "standard_error": None if error is None else round(error, 4)})
    return gains


def judge_revisions(systems: dict, task, fmt: RevisionFormat, levels, problems_per_level: int, turns: int, **sampling):
    """Figures per system and level; `systems` maps a name to ``(generator, uses_context)``, the judged one first.

    Every system runs on the same held-out problems with the same sampling settings and seeds;
    ``gains_over_controls`` holds the first system's gain over each other one per level and turn.
    """
    report: dict = {"problems_per_level": problems_per_level, "turns": turns, "revision_format": fmt.to_dict()}
    rows = [row for level in levels for row in task.generate(problems_per_level, level, sampling["seed"], "test")]
    graded: dict[str, dict[str, list[list[bool]]]] = {}
    for name, (generator, uses_context) in systems.items():
        shown = fmt if uses_context else replace(fmt, context_window=0)
        tokens_before = generator.stats.generated_tokens
        per_problem = run_chains(generator, task, rows, chains=1, length=turns, fmt=shown, **sampling)
        graded[name] = {
            str(level): graded_chains(
                task,
                [row for row in rows if row["level"] == level],
                [chains for row, chains in zip(rows, per_problem) if row["level"] == level],
            )
            for level in levels
        }
        per_level = {level: turn_figures(chains) for level, chains in graded[name].items()}
        report[name] = {
            key: {level: figures[key] for level, figures in per_level.items()} for key in per_level[str(levels[0])]
        }
        report[name]["generated_tokens"] = generator.stats.generated_tokens - tokens_before
    judged, *controls = graded
    report["gains_over_controls"] = {
        control: {level: gains_per_turn(chains, graded[control][level]) for level, chains in graded[judged].items()}
        for control in controls
    }
    return report
