"""GPU check: the toy pipeline and the SmolLM2 rehearsal on CUDA with the HF backend, timed, with peak GPU memory.

    python benchmarks/gpu_check.py [--toy recipes/toy-tiny] [--smollm2 CHECKPOINT | --smollm2_random CONFIG_DIR]

Runs `ponder pipeline` on the toy recipe folder, then on `recipes/smollm2-gsm8k` from its label stage
on (the policy: `--smollm2`, a converted SmolLM2 checkpoint; or `--smollm2_random`, a folder with
SmolLM2's config and tokenizer whose weights are initialised at random here, for a machine the
GGUF file cannot reach), with the GSM8K problems of `--problems_dir`. Every stage uses transformers
on the GPU (``backend: hf``), launched with ``accelerate_configs/single_gpu.yaml``. While a pipeline
runs, the GPU's used memory is sampled with ``nvidia-smi`` twice a second. Writes ``gpu_check.json``
and ``gpu_check.md`` (stage seconds and peak GPU memory) to `--out`. Without a GPU it stops, unless `--allow_cpu` (a dry
run of the same commands).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

SMOLLM2_STAGES = ("label", "prm", "revisions", "revision", "evaluate")


class MemorySampler:
    """Peak used memory of GPU 0 in MiB, sampled with nvidia-smi while a command runs (None without it)."""

    def __init__(self, interval: float = 0.5):
        self.interval, self.peak, self._stop = interval, None, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        query = ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "--id=0"]
        while not self._stop.is_set():
            out = subprocess.run(query, capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip():
                used = int(out.stdout.split()[0])
                self.peak = used if self.peak is None else max(self.peak, used)
            self._stop.wait(self.interval)

    def __enter__(self):
        if shutil.which("nvidia-smi"):
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def run_pipeline(name: str, command: list[str], output_dir: Path) -> dict:
    """Run one pipeline command; its stages' seconds (from their completion markers) and the GPU's peak memory."""
    print(f"[{name}] {' '.join(command)}", flush=True)
    start = time.monotonic()
    with MemorySampler() as memory:
        code = subprocess.run(command).returncode
    stages = {
        marker.parent.name: json.loads(marker.read_text()).get("seconds")
        for marker in sorted(output_dir.glob("*/stage_complete.json"))
    }
    return {
        "command": command,
        "exit_code": code,
        "seconds": round(time.monotonic() - start, 1),
        "stages": stages,
        "peak_gpu_memory_mib": memory.peak,
    }


def random_smollm2(config_dir: Path, output_dir: Path) -> Path:
    """A SmolLM2-architecture checkpoint with random weights and the real tokenizer, from `config_dir`."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(config_dir))
    model.save_pretrained(output_dir)
    AutoTokenizer.from_pretrained(config_dir).save_pretrained(output_dir)
    return output_dir


def markdown(record: dict) -> str:
    lines = [
        "# GPU check",
        "",
        f"Device: {record['device']}; torch {record['torch']}; commit {record['commit']}.",
        f"Command: `{record['command']}`",
        "",
        "| pipeline | stage | seconds |",
        "|---|---|---|",
    ]
    for name, run in record["pipelines"].items():
        lines += [f"| {name} | {stage} | {seconds} |" for stage, seconds in run["stages"].items()]
        lines.append(f"| {name} | **all** (exit {run['exit_code']}) | {run['seconds']} |")
    lines += ["", "| pipeline | peak GPU memory (MiB) |", "|---|---|"]
    lines += [f"| {name} | {run['peak_gpu_memory_mib']} |" for name, run in record["pipelines"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toy", default="recipes/toy-tiny", help="toy recipe folder (recipes/toy for the full one)")
    parser.add_argument("--smollm2", help="a SmolLM2 checkpoint folder (ponder convert-gguf)")
    parser.add_argument("--smollm2_random", help="a folder with SmolLM2's config and tokenizer: random weights")
    parser.add_argument("--problems_dir", default="../shared/data/gsm8k", help="GSM8K train.jsonl and test.jsonl")
    parser.add_argument("--out", default="outputs/gpu-check")
    parser.add_argument("--allow_cpu", action="store_true", help="run without a GPU (a dry run of the commands)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available() and not args.allow_cpu:
        raise SystemExit("gpu_check: no CUDA GPU visible (pass --allow_cpu for a dry run on the CPU)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pipeline = [sys.executable, "-m", "ponder.training.pipeline"]
    runs = {}
    runs["toy"] = run_pipeline("toy", [*pipeline, args.toy, "--output_dir", str(out / "toy")], out / "toy")
    policy = args.smollm2 or (
        args.smollm2_random and str(random_smollm2(Path(args.smollm2_random), out / "smollm2-random"))
    )
    if policy:
        problems = Path(args.problems_dir)
        settings = [
            f"label.policy={policy}", f"label.problems_file={problems / 'train.jsonl'}",
            f"prm.model_name_or_path={policy}",
            f"revisions.policy={policy}", f"revisions.problems_file={problems / 'train.jsonl'}",
            f"revision.model_name_or_path={policy}",
            f"evaluate.policy={policy}", f"evaluate.problems_file={problems / 'test.jsonl'}",
        ]  # fmt: skip
        command = [*pipeline, "recipes/smollm2-gsm8k", "--output_dir", str(out / "smollm2"), "--stages"]
        command += [",".join(SMOLLM2_STAGES), "--accelerate_config", "accelerate_configs/single_gpu.yaml"]
        command += [flag for s in settings for flag in ("--set", s)]
        runs["smollm2"] = run_pipeline("smollm2", command, out / "smollm2")
    record = {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        "command": " ".join(["python", "benchmarks/gpu_check.py", *(argv if argv is not None else sys.argv[1:])]),
        "pipelines": runs,
    }
    (out / "gpu_check.json").write_text(json.dumps(record, indent=2))
    (out / "gpu_check.md").write_text(markdown(record))
    print(markdown(record), flush=True)
    return record


if __name__ == "__main__":
    main()
