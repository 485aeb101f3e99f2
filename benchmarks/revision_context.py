"""What a revision model does with a wrong attempt it is shown, and what an exact repair would gain.

    python benchmarks/revision_context.py --revision outputs/countdown/revision [--problems_per_level 100]

On held-out problems of a toy task (levels 2-5), each problem's first attempt is followed by a
second one, shown the first (the revision format) or not (an empty context), at T = 0.8. For every
wrong first attempt: the kind of its first error (the task's `diagnose`), whether the second
attempt repeats it word for word, and whether the second attempt is right. Then the ceiling of a
repair that knows where the attempt went wrong: the model, without context, continues each
dead-end attempt from the steps before its first dead end, `--continuations` times; at a dead end
on step 0 that is a fresh sample. Writes benchmarks/results/revision_context.json and prints it.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

from ponder.inference.generation import EngineConfig, SamplingParams, make_generator
from ponder.inference.revision import load_revision_format, run_chains
from ponder.inference.tasks import get_task
from ponder.training.core.outputs import write_json_atomic

RESULTS = Path(__file__).parent / "results" / "revision_context.json"
LEVELS = [2, 3, 4, 5]
TEMPERATURE = 0.8


def second_attempts(generator, task, rows, fmt, max_new_tokens: int) -> dict:
    """Per kind of first error: wrong first attempts, and the share repeated and the share right next."""
    chains = run_chains(generator, task, rows, 1, 2, fmt, temperature=TEMPERATURE, max_new_tokens=max_new_tokens)
    counts: Counter = Counter()
    for row, ((first, second),) in zip(rows, chains):
        if first.is_correct(task, row["answer"]):
            continue
        error = task.diagnose(row, first.text)
        kind = error.kind if error else "unfinished"
        for key in (kind, "all"):
            counts[key, "wrong"] += 1
            counts[key, "repeated"] += first.text == second.text
            counts[key, "right next"] += second.is_correct(task, row["answer"])
    kinds = sorted({kind for kind, _ in counts}, key=lambda k: -counts[k, "wrong"])
    return {
        kind: {
            "wrong_first_attempts": counts[kind, "wrong"],
            "repeated": round(counts[kind, "repeated"] / counts[kind, "wrong"], 3),
            "right_next": round(counts[kind, "right next"] / counts[kind, "wrong"], 3),
        }
        for kind in kinds
    }


def repairs(generator, task, rows, fmt, continuations: int, max_new_tokens: int) -> dict:
    """Right continuations from the steps before each dead-end first attempt's first dead end."""
    (firsts,) = zip(
        *run_chains(generator, task, rows, 1, 1, fmt, temperature=TEMPERATURE, max_new_tokens=max_new_tokens)
    )
    cases = []
    for row, (first,) in zip(rows, firsts):
        error = task.diagnose(row, first.text)
        if not first.is_correct(task, row["answer"]) and error is not None and error.kind == "dead_end":
            kept = task.split_steps(first.text)[: error.index]
            prefix = "".join(step + task.step_delimiter for step in kept)
            cases.append((row, error.index, fmt.prompt(generator.tokenizer, task.make_prompt(row), []), prefix))
    params = SamplingParams(n=continuations, temperature=TEMPERATURE, max_new_tokens=max_new_tokens, seed=1)
    outputs = generator.generate([prompt + prefix for _, _, prompt, prefix in cases], params)
    counts: Counter = Counter()
    for (row, index, _, prefix), completions in zip(cases, outputs):
        where = "dead_end_on_step_0" if index == 0 else "dead_end_later"
        counts[where, "attempts"] += 1
        for completion in completions:
            answer = task.extract_answer(prefix + completion.text) if completion.finish_reason == "eos" else None
            counts[where, "right"] += answer is not None and task.check_answer(answer, row["answer"])
    return {
        where: {
            "attempts": counts[where, "attempts"],
            "right_continuations": round(counts[where, "right"] / (continuations * counts[where, "attempts"]), 3),
        }
        for where in ("dead_end_on_step_0", "dead_end_later")
        if counts[where, "attempts"]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--revision", required=True, help="revision checkpoint (its ponder.json names the format)")
    parser.add_argument("--task", default="countdown")
    parser.add_argument("--problems_per_level", type=int, default=100)
    parser.add_argument("--continuations", type=int, default=4)
    parser.add_argument("--max_new_tokens", type=int, default=128)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    task = get_task(args.task)
    generator = make_generator(args.revision, EngineConfig(backend="hf"))
    fmt = load_revision_format(args.revision)
    plain = replace(fmt, context_window=0)
    rows = [row for level in LEVELS for row in task.generate(args.problems_per_level, level, 0, "test")]
    out = {
        "revision": args.revision,
        "task": args.task,
        "levels": LEVELS,
        "problems_per_level": args.problems_per_level,
        "temperature": TEMPERATURE,
        "second_attempt_shown_the_first": second_attempts(generator, task, rows, fmt, args.max_new_tokens),
        "second_attempt_without_context": second_attempts(generator, task, rows, plain, args.max_new_tokens),
        "repair_from_the_last_live_step": repairs(
            generator, task, rows, plain, args.continuations, args.max_new_tokens
        ),
    }
    write_json_atomic(args.out, out)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
