"""Judging verifiers against the toy world's oracle on fresh policy samples (held-out test problems).

Per level and overall: pooled step AUC against the oracle's step labels (``step_auc_oracle``), the
same AUC within problems only (``step_auc_within_problem``: pairs of samples of one problem compared
at the same step, so that neither which problems are hard nor which positions come late can carry
it; pooled AUC mostly measures those), solution-level AUC within problems,
ProcessBench's first-error F1, and best-of-N accuracy with the verifier (weighted and naive) against
majority voting on the same samples. Several verifiers are judged on the very same samples, so a
trained PRM and the policy-likelihood baseline are compared side by side.
"""

from __future__ import annotations

from dataclasses import dataclass

from ponder.inference.generation import SamplingParams, chat_prompt
from ponder.inference.metrics import auc, first_below, first_error_f1, within_group_auc
from ponder.inference.search.selection import select_answer
from ponder.inference.verifiers import aggregate


@dataclass
class JudgedSample:
    steps: list[str]
    answer: str | None
    correct: bool
    oracle: list[bool]  # per step: no wrong step up to here


@dataclass
class JudgedProblem:
    question: str
    level: int
    gold: str
    samples: list[JudgedSample]


def sample_problems(generator, task, levels, problems_per_level: int, samples: int, seed: int, **sampling) -> list:
    """`samples` policy solutions for each of `problems_per_level` test problems per level, with oracle labels."""
    problems = [p for level in levels for p in task.generate(problems_per_level, level, seed, "test")]
    questions = [task.make_prompt(p) for p in problems]
    params = SamplingParams(n=samples, seed=seed, **sampling)
    outputs = generator.generate([chat_prompt(generator.tokenizer, q) for q in questions], params)
    judged = []
    for problem, question, completions in zip(problems, questions, outputs):
        group = []
        for c in completions:
            steps = task.split_steps(c.text)
            if not steps:
                continue
            finished = c.finish_reason == "eos"
            answer = task.extract_answer(c.text) if finished else None
            wrong = task.first_wrong_step({"problem": question}, c.text)
            cut = len(steps) if wrong is None else wrong
            correct = answer is not None and task.check_answer(answer, problem["answer"])
            group.append(JudgedSample(steps, answer, correct, [i < cut for i in range(len(steps))]))
        judged.append(JudgedProblem(question, problem["level"], problem["answer"], group))
    return judged


def judge(verifier, problems: list[JudgedProblem], aggregation: str = "last") -> dict:
    """Oracle metrics of one verifier on `problems`, per level (as strings) and ``"all"``."""
    flat = [(p, s) for p in problems for s in p.samples]
    scored = verifier.score([p.question for p, _ in flat], [s.steps for _, s in flat])
    scores_of: dict[int, list[list[float]]] = {}
    for (problem, _), result in zip(flat, scored):
        scores_of.setdefault(id(problem), []).append(result.step_scores)
    report = {}
    for key in ["all"] + sorted({str(p.level) for p in problems}):
        chosen = [p for p in problems if key in ("all", str(p.level))]
        report[key] = _metrics(chosen, scores_of, aggregation)
    return report


def _metrics(problems: list[JudgedProblem], scores_of: dict, aggregation: str) -> dict:
    step_scores, step_truth, step_groups, solution_groups = [], [], [], []
    predicted, truth = [], []
    bon = {"weighted": 0, "naive": 0, "majority": 0}
    for problem in problems:
        per_sample = scores_of.get(id(problem), [])
        at_step: dict[int, tuple[list[float], list[bool]]] = {}
        for sample, scores in zip(problem.samples, per_sample):
            oracle = sample.oracle[-len(scores) :]  # an ORM's one score stands for the whole solution
            for i, (score, ok) in enumerate(zip(scores, oracle)):
                at_step.setdefault(i, ([], []))[0].append(score)
                at_step[i][1].append(ok)
            step_scores += scores
            step_truth += oracle
            predicted.append(first_below(scores))
            truth.append(next((i for i, ok in enumerate(oracle) if not ok), None))
        step_groups += at_step.values()
        totals = [aggregate(scores, aggregation) for scores in per_sample]
        solution_groups.append((totals, [s.correct for s in problem.samples]))
        answers = [s.answer for s in problem.samples]
        for how in bon:
            chosen = select_answer(answers, totals, how)
            bon[how] += any(s.correct for s in problem.samples if s.answer == chosen) if chosen else 0
    f1 = first_error_f1(predicted, truth)
    return {
        "problems": len(problems),
        "samples": len(predicted),
        "step_auc_oracle": _round(auc(step_scores, step_truth)),
        "step_auc_within_problem": _round(within_group_auc(step_groups)),
        "solution_auc_within_problem": _round(within_group_auc(solution_groups)),
        "first_error_f1": _round(f1["f1"]),
        "first_error_accuracy_on_erroneous": _round(f1["erroneous_accuracy"]),
        "first_error_accuracy_on_correct": _round(f1["correct_accuracy"]),
        **{f"{how}_bon": _round(count / len(problems)) if problems else None for how, count in bon.items()},
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def judge_rows(verifier, rows: list[dict], aggregation: str = "last") -> dict | None:
    """Solution-level AUC of `verifier` on held-out stepwise rows against their ``answer_correct``.

    Pooled and within problems (rows grouped by ``problem_id``, else by prompt), per ``level`` and
    ``"all"``; None when no row has a boolean ``answer_correct``. This is how a verifier without an
    oracle (a revision ORM, a PRM on real data) is judged within problems on its own held-out rows.
    """
    rows = [r for r in rows if isinstance(r.get("answer_correct"), bool)]
    if not rows:
        return None
    scored = verifier.score([r["prompt"] for r in rows], [r["completions"] for r in rows])
    totals = [aggregate(s.step_scores, aggregation) for s in scored]
    report = {}
    for key in ["all"] + sorted({str(r.get("level")) for r in rows if r.get("level") is not None}):
        chosen = [i for i, r in enumerate(rows) if key in ("all", str(r.get("level")))]
        groups: dict[str, tuple[list[float], list[bool]]] = {}
        for i in chosen:
            scores, truth = groups.setdefault(str(rows[i].get("problem_id", rows[i]["prompt"])), ([], []))
            scores.append(totals[i])
            truth.append(rows[i]["answer_correct"])
        report[key] = {
            "rows": len(chosen),
            "solution_auc": _round(auc([totals[i] for i in chosen], [rows[i]["answer_correct"] for i in chosen])),
            "solution_auc_within_problem": _round(within_group_auc(list(groups.values()))),
        }
    return report
