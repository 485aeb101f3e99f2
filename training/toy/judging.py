"""Sampled evaluation of a policy on held-out problems, per difficulty level, against the oracle."""

from __future__ import annotations

import time
from collections import Counter

from ponder.inference.generation import HFGenerator, SamplingParams, chat_prompt
from ponder.inference.metrics import majority_answer, pass_at_k


def evaluate_policy(model, tokenizer, task, config) -> dict:
    """pass@1, pass@n and majority@n per level, and where the wrong samples first go wrong.

    `config` supplies `levels`, `eval_problems_per_level`, `eval_samples`, `eval_temperature`,
    `eval_top_p`, `eval_max_new_tokens` and `eval_seed`.
    """
    n = config.eval_samples
    problems = [
        p for level in config.levels for p in task.generate(config.eval_problems_per_level, level, config.eval_seed)
    ]
    sampling = SamplingParams(
        n=n,
        temperature=config.eval_temperature,
        top_p=config.eval_top_p,
        max_new_tokens=config.eval_max_new_tokens,
        seed=config.eval_seed,
    )
    generator = HFGenerator(model, tokenizer)
    start = time.monotonic()
    completions = generator.generate([chat_prompt(tokenizer, task.make_prompt(p)) for p in problems], sampling)
    seconds = time.monotonic() - start
    per_level: dict[str, dict[str, list[float]]] = {}
    error_kinds: Counter = Counter()
    finish_reasons: Counter = Counter()
    located = 0
    for problem, samples in zip(problems, completions):
        stats = per_level.setdefault(str(problem["level"]), {"pass1": [], "passn": [], "majority": []})
        texts = [s.text for s in samples]
        correct = [task.grade(t, problem["answer"]) for t in texts]
        stats["pass1"].append(sum(correct) / n)
        stats["passn"].append(pass_at_k(n, sum(correct), n))
        vote = majority_answer([task.extract_answer(t) for t in texts])
        stats["majority"].append(float(vote is not None and task.check_answer(vote, problem["answer"])))
        finish_reasons.update(s.finish_reason for s in samples)
        for text, ok in zip(texts, correct):
            if not ok:
                error = task.diagnose(problem, text)
                error_kinds[error.kind if error else "unfinished"] += 1
                located += bool(error and error.step_located)
    wrong = sum(error_kinds.values())

    def mean(values: list[float]) -> float:
        return round(sum(values) / len(values), 4)

    return {
        "levels": [int(level) for level in per_level],
        "pass_at_1": {level: mean(s["pass1"]) for level, s in per_level.items()},
        f"pass_at_{n}": {level: mean(s["passn"]) for level, s in per_level.items()},
        f"majority_at_{n}": {level: mean(s["majority"]) for level, s in per_level.items()},
        "step_located_error_fraction": round(located / wrong, 4) if wrong else None,
        "wrong_samples": wrong,
        "error_kinds": dict(error_kinds.most_common()),
        "finish_reasons": dict(finish_reasons),
        "sampling": {
            "temperature": config.eval_temperature,
            "top_p": config.eval_top_p,
            "samples_per_problem": n,
            "problems_per_level": config.eval_problems_per_level,
            "max_new_tokens": config.eval_max_new_tokens,
            "seed": config.eval_seed,
            "split": "test",
        },
        "generated_tokens": generator.stats.generated_tokens,
        "eval_seconds": round(seconds, 1),
    }
