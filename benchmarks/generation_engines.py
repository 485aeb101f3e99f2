"""ponder's HF generator against transformers' batched `generate()` and against vLLM, on the same prompts.

    python benchmarks/generation_engines.py --model outputs/smollm2 [--problems 16 --samples 4]

Each engine samples `--samples` completions of up to `--max_new_tokens` tokens for the chat prompts of
the first `--problems` GSM8K test problems (temperature 0.8, no stop strings, so every engine decodes
the same number of steps unless EOS comes first), in one process, one engine after the other. Reports
generated tokens per second and ratios against ponder's HF generator. vLLM is skipped when it is not
installed; on a CPU its build for this machine runs with ``enforce_eager`` and 1 GiB of KV cache.

Writes benchmarks/results/generation_engines.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ponder.inference.engine import EngineConfig
from ponder.inference.generation import HFGenerator, SamplingParams, VLLMGenerator, chat_prompt
from ponder.inference.tasks import get_task
from ponder.training.core.outputs import write_json_atomic

RESULTS = Path(__file__).parent / "results" / "generation_engines.json"
GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "test.jsonl"


def transformers_generate(model, tokenizer, prompts: list[str], params: SamplingParams) -> int:
    """Generated tokens of one batched `generate()` call (left padding, `num_return_sequences`)."""
    tokenizer.padding_side = "left"
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    out = model.generate(
        **batch,
        do_sample=True,
        temperature=params.temperature,
        top_p=params.top_p,
        max_new_tokens=params.max_new_tokens,
        num_return_sequences=params.n,
        pad_token_id=tokenizer.pad_token_id,
    )
    new = out[:, batch["input_ids"].shape[1] :]
    eos = torch.tensor(model.generation_config.eos_token_id or tokenizer.eos_token_id).flatten()
    tokens = 0
    for row in new.tolist():
        ends = [i for i, token in enumerate(row) if token in eos.tolist()]
        tokens += ends[0] + 1 if ends else len(row)
    return tokens


def timed(fn) -> tuple[int, float]:
    start = time.perf_counter()
    tokens = fn()
    return tokens, time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a checkpoint folder (e.g. SmolLM2 from ponder convert-gguf)")
    parser.add_argument("--problems_file", default=str(GSM8K))
    parser.add_argument("--problems", type=int, default=16)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max_new_tokens", type=int, default=128)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    task = get_task("gsm8k")
    rows = [json.loads(line) for line in Path(args.problems_file).read_text().splitlines()[: args.problems]]
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    prompts = [chat_prompt(tokenizer, task.make_prompt(task.problem_from_row(r, i))) for i, r in enumerate(rows)]
    params = SamplingParams(n=args.samples, temperature=0.8, max_new_tokens=args.max_new_tokens, seed=0)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    runs = {}

    hf = HFGenerator(model, tokenizer)
    runs["ponder_hf"] = timed(lambda: sum(c.num_tokens for row in hf.generate(prompts, params) for c in row))
    with torch.no_grad():
        runs["transformers_generate"] = timed(lambda: transformers_generate(model, tokenizer, prompts, params))
    try:
        import vllm  # noqa: F401

        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        engine = EngineConfig(backend="vllm", dtype="float32", enforce_eager=not torch.cuda.is_available())
        vllm_generator = VLLMGenerator(args.model, engine, seed=0)
        vllm_generator.generate(prompts[:1], SamplingParams(max_new_tokens=4))  # warm-up, not timed
        runs["vllm"] = timed(lambda: sum(c.num_tokens for row in vllm_generator.generate(prompts, params) for c in row))
    except ImportError:
        pass

    base_rate = runs["ponder_hf"][0] / runs["ponder_hf"][1]
    record = {
        "model": args.model,
        "prompts": len(prompts),
        "samples_per_prompt": args.samples,
        "max_new_tokens": args.max_new_tokens,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        + ("CUDA" if torch.cuda.is_available() else "CPU"),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),  # noqa: E501
        "engines": {
            name: {
                "generated_tokens": tokens,
                "seconds": round(seconds, 2),
                "tokens_per_second": round(tokens / seconds, 1),
                "ratio_to_ponder_hf": round(tokens / seconds / base_rate, 2),
            }
            for name, (tokens, seconds) in runs.items()
        },
    }
    write_json_atomic(args.out, record)
    print(json.dumps(record, indent=2))
    return record


if __name__ == "__main__":
    main()
