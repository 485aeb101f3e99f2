"""Search quality with a perfect verifier: the toy policy + the arith oracle, per level and budget.

    python benchmarks/oracle_search.py --policy outputs/toy/policy [--problems_per_level 100]

Best-of-N (one pass of 64 samples serves every budget) and beam search (M=4; M=1 at N=1) at
N = 1, 4, 16, 64, and DVTS (M=4) at N = 16, on held-out problems. With the oracle, weighted best-of-N equals pass@N:
this measures how much room search has and checks that the searches use it, before any PRM exists.
Writes benchmarks/results/oracle_search.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

from ponder.inference.generation import EngineConfig, make_generator
from ponder.inference.search import SearchSetup, beam_search, best_of_n, dvts
from ponder.inference.tasks import get_task
from ponder.inference.verifiers import OracleVerifier
from ponder.training.core.outputs import write_json_atomic

RESULTS = Path(__file__).parent / "results" / "oracle_search.json"
BUDGETS = [1, 4, 16, 64]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", required=True)
    parser.add_argument("--problems_per_level", type=int, default=100)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    task = get_task("arith")
    generator = make_generator(args.policy, EngineConfig(backend="hf"))
    setup = SearchSetup(generator, OracleVerifier(task), task, temperature=0.8)
    rows = [p for level in task.levels for p in task.generate(args.problems_per_level, level, seed=21)]
    start = time.perf_counter()
    results = best_of_n(rows, setup, n=max(BUDGETS), budgets=BUDGETS)
    for n in BUDGETS:
        results += beam_search(rows, setup, n=n, width=min(4, n))
    results += dvts(rows, setup, n=16, width=4)
    seconds = time.perf_counter() - start

    table: dict[str, dict] = defaultdict(dict)
    cells = defaultdict(list)
    for r in results:
        cells[(r["strategy"].replace("beam_m1", "beam_m4"), r["budget"], r["level"])].append(r)
    for (strategy, budget, level), rs in sorted(cells.items()):
        table[f"{strategy}@{budget}"][str(level)] = {
            "accuracy": round(sum(r["correct"] for r in rs) / len(rs), 3),
            "generated_tokens_per_problem": round(sum(r["generated_tokens"] for r in rs) / len(rs), 1),
        }
    out = {"policy": args.policy, "problems_per_level": args.problems_per_level, "temperature": 0.8}
    out["seconds"] = round(seconds, 1)
    out["table"] = table
    write_json_atomic(args.out, out)
    levels = sorted(task.levels)
    print("| strategy@N | " + " | ".join(f"L{lv}" for lv in levels) + " | tokens/problem (L3) |")
    print("|---" * (len(levels) + 2) + "|")
    for key, per_level in table.items():
        accs = " | ".join(f"{per_level[str(lv)]['accuracy']:.2f}" for lv in levels)
        print(f"| {key} | {accs} | {per_level['3']['generated_tokens_per_problem']:.0f} |")
    print(f"wrote {args.out} ({seconds:.0f} s)")


if __name__ == "__main__":
    main()
