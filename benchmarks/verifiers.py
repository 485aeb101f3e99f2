"""Several verifiers judged against the arith oracle on the very same fresh policy samples.

    python benchmarks/verifiers.py --policy outputs/toy/policy \\
        --verifier outputs/toy/prm --verifier outputs/toy/policy:policy_likelihood \\
        --verifier outputs/toy/policy-large:policy_likelihood

Each ``--verifier PATH[:KIND]`` is a checkpoint loaded with `load_verifier` (KIND overrides its
``ponder.json`` kind: ``policy_likelihood`` makes any causal LM a likelihood verifier). The policy
samples `--samples` solutions of `--problems_per_level` held-out problems per level at T = 0.8; every
verifier scores all of them, and `judge` reports pooled and within-problem step AUC, first-error F1
and best-of-N (weighted, naive) against majority voting, per level, with the seconds each took.
Writes benchmarks/results/verifiers.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ponder.inference.generation import EngineConfig, make_generator
from ponder.inference.tasks import get_task
from ponder.inference.verifiers import load_verifier
from ponder.training.core.outputs import write_json_atomic
from ponder.training.verifiers.judging import judge, sample_problems

RESULTS = Path(__file__).parent / "results" / "verifiers.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="outputs/toy/policy")
    parser.add_argument("--verifier", action="append", required=True, help="PATH[:KIND], repeatable")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    parser.add_argument("--problems_per_level", type=int, default=50)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--seed", type=int, default=4321)
    args = parser.parse_args()

    task = get_task("arith")
    generator = make_generator(args.policy, EngineConfig(backend="hf"), device="cpu")
    start = time.perf_counter()
    problems = sample_problems(
        generator, task, args.levels, args.problems_per_level, args.samples, args.seed,
        temperature=0.8, max_new_tokens=192,
    )  # fmt: skip
    record = {"policy": args.policy, "samples": args.samples, "sampling_seconds": round(time.perf_counter() - start, 1)}
    for spec in args.verifier:
        path, _, kind = spec.partition(":")
        verifier = load_verifier(path, **({"kind": kind} if kind else {}))
        aggregation = "min" if verifier.kind == "policy_likelihood" else verifier.aggregation
        start = time.perf_counter()
        report = judge(verifier, problems, aggregation)
        record[spec] = {"seconds": round(time.perf_counter() - start, 1), "aggregation": aggregation, **report}
        print(spec, {k: report["all"][k] for k in ("step_auc_oracle", "step_auc_within_problem", "weighted_bon")})
    write_json_atomic(RESULTS, record)


if __name__ == "__main__":
    main()
