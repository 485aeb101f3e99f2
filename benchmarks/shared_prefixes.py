"""Verifier scoring with shared prefixes against whole-sequence scoring, in one run.

    python benchmarks/shared_prefixes.py --policy outputs/toy/policy --verifier outputs/toy/prm-likelihood \\
        [--problems_per_level 20] [--n 8] [--width 4]

Runs the same beam search twice on the same held-out problems with the same seed: once with the
verifier running each shared prefix once (`ponder.inference.shared_prefix`), once scoring every
candidate's whole sequence. Both must pick the same answers; reported: wall time, verifier tokens
run and the ratios. Writes benchmarks/results/shared_prefixes.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ponder.inference.generation import EngineConfig, make_generator
from ponder.inference.search import SearchSetup, beam_search
from ponder.inference.tasks import get_task
from ponder.inference.verifiers import load_verifier
from ponder.training.core.outputs import write_json_atomic

RESULTS = Path(__file__).parent / "results" / "shared_prefixes.json"


def timed_search(rows: list[dict], setup: SearchSetup, n: int, width: int) -> dict:
    verifier = setup.verifier
    tokens, calls, start = verifier.stats.tokens, verifier.stats.calls, time.perf_counter()
    found = beam_search(rows, setup, n=n, width=width)
    return {
        "seconds": round(time.perf_counter() - start, 1),
        "verifier_tokens": verifier.stats.tokens - tokens,
        "verifier_calls": verifier.stats.calls - calls,
        "accuracy": round(sum(r["correct"] for r in found) / len(found), 4),
        "answers": [r["answer"] for r in found],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", required=True)
    parser.add_argument("--verifier", required=True)
    parser.add_argument("--problems_per_level", type=int, default=20)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--width", type=int, default=4)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    task = get_task("arith")
    rows = [r for level in task.levels for r in task.generate(args.problems_per_level, level, seed=0)]
    verifier = load_verifier(args.verifier)
    setup = SearchSetup(
        make_generator(args.policy, EngineConfig(backend="hf")), verifier, task, max_step_tokens=32, seed=0
    )
    runs = {}
    for name, shares in (("shared_prefixes", True), ("whole_sequences", False)):
        verifier.shares_prefixes = shares
        runs[name] = timed_search(rows, setup, args.n, args.width)
        print(name, {k: v for k, v in runs[name].items() if k != "answers"}, flush=True)
    shared, whole = runs["shared_prefixes"], runs["whole_sequences"]
    results = {
        "policy": args.policy,
        "verifier": args.verifier,
        "problems": len(rows),
        "search": f"beam N={args.n} M={args.width}",
        "same_answers": shared.pop("answers") == whole.pop("answers"),
        **runs,
        "speedup": round(whole["seconds"] / shared["seconds"], 2),
        "verifier_token_ratio": round(whole["verifier_tokens"] / shared["verifier_tokens"], 2),
    }
    print({k: results[k] for k in ("same_answers", "speedup", "verifier_token_ratio")})
    write_json_atomic(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
