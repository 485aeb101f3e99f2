"""MC-rollout labels against the arith oracle: per_step vs binary_search at the same k, in one run.

    python benchmarks/labels.py --policy outputs/toy/policy [--problems_per_level 32] [--seed 0] [--repeats 3]
        [--temperature 0.8] [--rollout_temperature 0.8] [--out benchmarks/results/labels.json]

Both modes label the same sampled solutions (train split, every level), `--repeats` times with
fresh rollout seeds: first-error agreement moves by several points between rollout seeds at this
size, so the modes are compared paired, as mean ± standard deviation over repeats. Reported per
mode and repeat: rollouts, generated tokens, rollouts/s and tokens/s, and agreement with the oracle
(step agreement of hard labels, negative precision/recall, first-error agreement on wrong
solutions), plus examples of disagreement from the first repeat. Estimation noise is measured apart
from the semantic gap: soft values at k = 8 against a k = 64 reference on a subset of prefixes
(mean absolute error).
Writes benchmarks/results/labels.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from ponder.inference.generation import EngineConfig, make_generator
from ponder.inference.tasks import get_task
from ponder.training.core.outputs import write_json_atomic
from ponder.training.labelling.quality import agreement, oracle_step_labels
from ponder.training.labelling.rollouts import RolloutLabeller, Sample, stepwise_row

RESULTS = Path(__file__).parent / "results" / "labels.json"


def copies(samples: list[Sample]) -> list[Sample]:
    return [Sample(s.problem, s.prompt, s.index, s.steps, s.correct) for s in samples]


def label(labeller: RolloutLabeller, samples: list[Sample], mode: str, seed: int) -> dict:
    rollouts, tokens, start = labeller.counter.rollouts, labeller.counter.generated_tokens, time.perf_counter()
    getattr(labeller, mode)(samples, seed)
    seconds = time.perf_counter() - start
    rollouts, tokens = labeller.counter.rollouts - rollouts, labeller.counter.generated_tokens - tokens
    return {
        "rollouts": rollouts,
        "generated_tokens": tokens,
        "seconds": round(seconds, 1),
        "rollouts_per_second": round(rollouts / seconds, 1),
        "generated_tokens_per_second": round(tokens / seconds),
    }


def overall(run: dict, key: str) -> float:
    return run[key] if key in run else run["oracle_agreement"]["all"][key]


def mean_sd(values: list[float]) -> dict:
    return {
        "mean": round(statistics.fmean(values), 4),
        "sd": round(statistics.stdev(values), 4) if len(values) > 1 else None,
    }


def disagreements(task, rows: list[dict], limit: int) -> list[dict]:
    """Steps the oracle calls wrong but whose rollouts still reached the answer, and the reverse."""
    found = []
    for row in rows:
        for i, (label, truth) in enumerate(zip(row["hard"], oracle_step_labels(task, row))):
            if label != truth and len(found) < limit:
                found.append(
                    {
                        "problem": row["prompt"],
                        "steps_up_to_here": row["completions"][: i + 1],
                        "mc_value": row["labels"][i],
                        "oracle": "correct so far" if truth else "wrong step at or before this one",
                    }
                )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", required=True)
    parser.add_argument("--problems_per_level", type=int, default=32)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=0.8, help="samples the solutions")
    parser.add_argument("--rollout_temperature", type=float, default=0.8, help="samples the rollouts")
    parser.add_argument("--reference_k", type=int, default=64)
    parser.add_argument("--reference_prefixes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0, help="sampling seed of the solutions and rollouts")
    parser.add_argument("--repeats", type=int, default=3, help="rollout seeds per mode, on the same solutions")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    task = get_task("arith")
    generator = make_generator(args.policy, EngineConfig(backend="hf"))
    sampling = {"temperature": args.temperature, "rollout_temperature": args.rollout_temperature}
    labeller = RolloutLabeller(generator, task, args.k, top_p=1.0, max_new_tokens=192, **sampling)
    problems = [p for level in task.levels for p in task.generate(args.problems_per_level, level, 0, "train")]
    samples = [s for group in labeller.sample(problems, args.samples, seed=args.seed) for s in group]

    results: dict = {"policy": args.policy, "seed": args.seed, "problems": len(problems), "samples": len(samples)}
    results.update(k=args.k, repeats=args.repeats, **sampling)
    labelled: dict[str, list[Sample]] = {}
    for mode in ("per_step", "binary_search"):
        results[mode] = {"runs": []}
        for repeat in range(args.repeats):
            copied = copies(samples)
            run = label(labeller, copied, mode, seed=args.seed + 1 + repeat)
            rows = [r for r in (stepwise_row(s, "keep") for s in copied) if r is not None]
            run["oracle_agreement"] = agreement(task, rows)
            if repeat == 0:
                labelled[mode] = copied
                run["disagreement_examples"] = disagreements(task, rows, limit=4)
            results[mode]["runs"].append(run)
            print(mode, repeat, {k: v for k, v in run.items() if k != "disagreement_examples"}, flush=True)
        for key in ("rollouts", "step_agreement", "first_error_agreement"):
            results[mode][key] = mean_sd([overall(run, key) for run in results[mode]["runs"]])
    results["rollout_ratio"] = round(
        results["per_step"]["rollouts"]["mean"] / results["binary_search"]["rollouts"]["mean"], 2
    )
    results["first_error_agreement"] = {mode: results[mode]["first_error_agreement"]["mean"] for mode in labelled}
    results["first_error_gap"] = mean_sd(
        [
            overall(a, "first_error_agreement") - overall(b, "first_error_agreement")
            for a, b in zip(results["per_step"]["runs"], results["binary_search"]["runs"])
        ]
    )

    targets = [(s, i) for s in labelled["per_step"] for i in range(len(s.steps) - 1)][: args.reference_prefixes]
    reference = RolloutLabeller(generator, task, args.reference_k, top_p=1.0, max_new_tokens=192, **sampling)
    shadows = {id(s): Sample(s.problem, s.prompt, s.index, s.steps, s.correct) for s, _ in targets}
    reference.estimate([(shadows[id(s)], i) for s, i in targets], seed=args.seed + 2)
    errors = [abs(s.values[i] - shadows[id(s)].values[i]) for s, i in targets]
    results["soft_value_noise"] = {
        "prefixes": len(targets),
        "k": args.k,
        "reference_k": args.reference_k,
        "mean_absolute_error": round(sum(errors) / len(errors), 4),
    }
    print("soft value noise", results["soft_value_noise"], flush=True)
    write_json_atomic(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
