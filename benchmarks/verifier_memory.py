"""Peak memory of a causal verifier at a real vocabulary size: 64 candidates of ~512 tokens.

A randomly initialised 2-layer Llama with Qwen2.5's vocabulary (151,936) scores with the
``policy_likelihood`` and ``prm_causal_lm`` kinds. Prints JSON: resident memory after loading, peak
during scoring, and the increase, in GiB (``ru_maxrss`` of this process).

    python benchmarks/verifier_memory.py --kind policy_likelihood
"""

from __future__ import annotations

import argparse
import json
import resource

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ponder.inference.step_format import StepFormat
from ponder.inference.verifiers import HFVerifier
from ponder.training.toy.model import build_tokenizer


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="policy_likelihood", choices=["policy_likelihood", "prm_causal_lm"])
    parser.add_argument("--vocab_size", type=int, default=151_936)
    parser.add_argument("--candidates", type=int, default=64)
    parser.add_argument("--steps", type=int, default=32, help="steps per candidate (16 characters each)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=args.vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
    )
    model = LlamaForCausalLM(config).eval()
    tokenizer = build_tokenizer()
    step_format = StepFormat(prompt_template="plain", step_tag="#" if args.kind == "prm_causal_lm" else None)
    verifier = HFVerifier(model, tokenizer, args.kind, step_format, positive_token="1", negative_token="0")
    questions = [f"{i:04d}+{i:04d}" for i in range(args.candidates)]
    steps = [[f"{i:04d}+{j:04d}={i + j:05d}" for j in range(args.steps)] for i in range(args.candidates)]
    tokens = [len(e) for e in [tokenizer(q + "".join(s))["input_ids"] for q, s in zip(questions, steps)]]
    loaded = peak_gib()
    verifier.score(questions, steps)
    record = {
        "kind": args.kind,
        "vocab_size": args.vocab_size,
        "candidates": args.candidates,
        "tokens_per_candidate": round(sum(tokens) / len(tokens)),
        "loaded_gib": round(loaded, 3),
        "peak_gib": round(peak_gib(), 3),
        "increase_gib": round(peak_gib() - loaded, 3),
    }
    print(json.dumps(record))
    return record


if __name__ == "__main__":
    main()
