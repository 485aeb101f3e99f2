"""`ponder pipeline DIR`: run a recipe folder's stages in order, skipping stages already complete.

Each stage `S` with a recipe `DIR/S.yaml` runs as ``python -m ponder.training.S --config DIR/S.yaml
--output_dir OUT/S`` (through ``accelerate launch`` when the folder holds `accelerate.yaml` and the
stage trains). A stage counts as complete once it exits cleanly and `OUT/S/stage_complete.json` is
written, so a rerun after a crash resumes at the first unfinished stage.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from ponder.training.outputs import write_json_atomic

STAGE_ORDER = ["policy"]
DISTRIBUTED_STAGES: set[str] = set()
COMPLETE_MARKER = "stage_complete.json"


def stage_command(stage: str, recipe: Path, output_dir: Path, accelerate_config: Path | None) -> list[str]:
    """The command line that runs one stage."""
    if accelerate_config is not None and stage in DISTRIBUTED_STAGES:
        launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config)]
    else:
        launcher = [sys.executable]
    return [*launcher, "-m", f"ponder.training.{stage}", "--config", str(recipe), "--output_dir", str(output_dir)]


def run_pipeline(recipe_dir: Path, output_root: Path, extra_args: list[str]) -> dict:
    """Run every stage of `recipe_dir` that is not complete yet; returns a per-stage record."""
    stages = [s for s in STAGE_ORDER if (recipe_dir / f"{s}.yaml").exists()]
    if not stages:
        raise SystemExit(f"{recipe_dir}: no stage recipes found (expected some of {', '.join(STAGE_ORDER)} .yaml)")
    accelerate_config = recipe_dir / "accelerate.yaml"
    record = {}
    for number, stage in enumerate(stages, 1):
        output_dir = output_root / stage
        marker = output_dir / COMPLETE_MARKER
        if marker.exists():
            print(f"[{number}/{len(stages)}] {stage}: complete, skipped ({marker})", flush=True)
            record[stage] = json.loads(marker.read_text()) | {"skipped": True}
            continue
        command = stage_command(
            stage, recipe_dir / f"{stage}.yaml", output_dir, accelerate_config if accelerate_config.exists() else None
        )
        command += extra_args
        print(f"[{number}/{len(stages)}] {stage}: {' '.join(command)}", flush=True)
        start = time.monotonic()
        result = subprocess.run(command)
        if result.returncode != 0:
            raise SystemExit(f"stage {stage!r} failed with exit code {result.returncode}; rerun to resume")
        record[stage] = {"command": command, "seconds": round(time.monotonic() - start, 1)}
        write_json_atomic(marker, record[stage])
    return record


def summary(output_root: Path) -> str:
    """Headline numbers of the stages that have run."""
    lines = []
    policy_eval = output_root / "policy" / "eval.json"
    if policy_eval.exists():
        record = json.loads(policy_eval.read_text())
        lines.append("policy pass@1 per level: " + ", ".join(f"L{k} {v:.2f}" for k, v in record["pass_at_1"].items()))
        lines.append(f"policy eval: {policy_eval}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ponder pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("recipe_dir", type=Path, help="folder of stage recipes, e.g. recipes/toy")
    parser.add_argument("--output_dir", type=Path, default=None, help="default: outputs/<recipe folder name>")
    args, extra = parser.parse_known_args(argv)
    if not args.recipe_dir.is_dir():
        raise SystemExit(f"ponder pipeline: {args.recipe_dir} is not a folder")
    output_root = args.output_dir or Path("outputs") / args.recipe_dir.resolve().name
    run_pipeline(args.recipe_dir, output_root, extra)
    print(summary(output_root), flush=True)


if __name__ == "__main__":
    main()
