"""Batched search against the same search one problem at a time, in one run.

    python benchmarks/search.py --policy outputs/toy/policy [--problems 128]

1. Beam search (N=8, M=2, oracle verifier) over `--problems` arith problems: batched across all
   problems against a loop over problems with batch size 1 (search-and-learn's shape). Greedy
   decoding must give identical answers; sampled decoding must give equal accuracy within noise.
2. Verifier scoring of the batched run's candidates: length-sorted batches against one sequence at a
   time (OpenR's shape), with a PRM of the policy's size (random weights: this measures speed only).

Writes benchmarks/results/search.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoModelForTokenClassification, AutoTokenizer

from ponder.inference.generation import HFGenerator, chat_prompt
from ponder.inference.search import SearchSetup, beam_search
from ponder.inference.step_format import StepFormat
from ponder.inference.tasks import get_task
from ponder.inference.verifiers import HFVerifier, OracleVerifier
from ponder.training.core.outputs import write_json_atomic

RESULTS = Path(__file__).parent / "results" / "search.json"


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def one_at_a_time(search, rows):
    return [r for row in rows for r in search([row])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", required=True)
    parser.add_argument("--problems", type=int, default=128)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--width", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    torch.manual_seed(0)
    task = get_task("arith")
    model = AutoModelForCausalLM.from_pretrained(args.policy)
    tokenizer = AutoTokenizer.from_pretrained(args.policy)
    generator = HFGenerator(model, tokenizer)
    per_level = -(-args.problems // len(task.levels))  # at least `--problems` in all
    rows = [p for level in task.levels for p in task.generate(per_level, level, seed=11)]
    results = {"policy": args.policy, "problems": len(rows), "n": args.n, "width": args.width}
    results["torch_threads"] = torch.get_num_threads()

    for name, temperature in (("greedy", 0.0), ("sampled", 0.8)):
        setup = SearchSetup(generator, OracleVerifier(task), task, temperature=temperature)

        def search(batch, setup=setup):
            return beam_search(batch, setup, n=args.n, width=args.width)

        batched, batched_s = timed(lambda search=search: search(rows))
        single, single_s = timed(lambda search=search: one_at_a_time(search, rows))
        results[f"beam_{name}"] = {
            "batched_seconds": round(batched_s, 2),
            "one_at_a_time_seconds": round(single_s, 2),
            "speedup": round(single_s / batched_s, 2),
            "identical_answers": sum(a["answer"] == b["answer"] for a, b in zip(batched, single)) / len(rows),
            "batched_accuracy": sum(r["correct"] for r in batched) / len(rows),
            "one_at_a_time_accuracy": sum(r["correct"] for r in single) / len(rows),
            "batched_generated_tokens": sum(r["generated_tokens"] for r in batched),
            "one_at_a_time_generated_tokens": sum(r["generated_tokens"] for r in single),
        }
        print(name, results[f"beam_{name}"], flush=True)
    results["beam_batched_speedup"] = results["beam_greedy"]["speedup"]

    prm_model = AutoModelForTokenClassification.from_pretrained(args.policy, num_labels=1)
    verifier = HFVerifier(prm_model, tokenizer, "prm_token_classification", StepFormat())
    sampling = SearchSetup(generator, OracleVerifier(task), task).sampling(16, "verifier-benchmark", step=False)
    prompts = [task.make_prompt(r) for r in rows]
    outputs = generator.generate([chat_prompt(tokenizer, p) for p in prompts], sampling)
    questions = [q for q, outs in zip(prompts, outputs) for _ in outs]
    solutions = [task.split_steps(c.text) or ["?"] for outs in outputs for c in outs]
    batched, batched_s = timed(lambda: verifier.score(questions, solutions))
    single, single_s = timed(lambda: [verifier.score([q], [s])[0] for q, s in zip(questions, solutions)])
    max_diff = max(abs(x - y) for a, b in zip(batched, single) for x, y in zip(a.step_scores, b.step_scores))
    results["verifier"] = {
        "sequences": len(solutions),
        "tokens": sum(s.num_tokens for s in batched),
        "batched_seconds": round(batched_s, 2),
        "one_at_a_time_seconds": round(single_s, 2),
        "speedup": round(single_s / batched_s, 2),
        "max_score_difference": max_diff,
    }
    results["verifier_batched_speedup"] = results["verifier"]["speedup"]
    print("verifier", results["verifier"], flush=True)
    write_json_atomic(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
