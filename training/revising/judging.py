"""Judging a revision model turn by turn against no-context controls at the same temperature.

A chain of `turns` sequential attempts per held-out problem: pass@1 at each turn, and the rate at
which a correct attempt is followed by a wrong one (correct→wrong) and the reverse. The same figures
for controls that sample every turn without context (the base policy, and the revision model with
an empty context) are what independent resampling gives: a revision gain counts only above them.
"""

from __future__ import annotations

from dataclasses import replace

from ponder.inference.revision import RevisionFormat, run_chains


def turn_figures(task, rows: list[dict], per_problem) -> dict:
    """pass@1 per turn and the transition rates between consecutive turns, over all chains of `rows`."""
    graded = [
        [[a.is_correct(task, row["answer"]) for a in chain] for chain in chains]
        for row, chains in zip(rows, per_problem)
    ]
    chains = [chain for per_row in graded for chain in per_row]
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


def judge_revisions(systems: dict, task, fmt: RevisionFormat, levels, problems_per_level: int, turns: int, **sampling):
    """Figures per system and level; `systems` maps a name to ``(generator, uses_context)``.

    Every system runs on the same held-out problems with the same sampling settings and seeds.
    """
    report: dict = {"problems_per_level": problems_per_level, "turns": turns, "revision_format": fmt.to_dict()}
    rows = [row for level in levels for row in task.generate(problems_per_level, level, sampling["seed"], "test")]
    for name, (generator, uses_context) in systems.items():
        shown = fmt if uses_context else replace(fmt, context_window=0)
        tokens_before = generator.stats.generated_tokens
        per_problem = run_chains(generator, task, rows, chains=1, length=turns, fmt=shown, **sampling)
        per_level = {
            str(level): turn_figures(
                task,
                [row for row in rows if row["level"] == level],
                [chains for row, chains in zip(rows, per_problem) if row["level"] == level],
            )
            for level in levels
        }
        report[name] = {
            key: {level: figures[key] for level, figures in per_level.items()} for key in per_level[str(levels[0])]
        }
        report[name]["generated_tokens"] = generator.stats.generated_tokens - tokens_before
    return report
