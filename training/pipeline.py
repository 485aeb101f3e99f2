"""`ponder pipeline DIR`: run a recipe folder's stages in order, skipping stages already complete.

Each stage `S` with a recipe `DIR/S.yaml` runs as ``python -m ponder.training.S --config DIR/S.yaml
--output_dir OUT/S``, through ``accelerate launch`` with `DIR/accelerate-S.yaml` when the folder holds
one, else with `DIR/accelerate.yaml` when it holds that and the stage trains or shards data. On a
machine without a GPU a DeepSpeed launch runs on DeepSpeed's CPU accelerator (``DS_ACCELERATOR=cpu``
unless the environment sets it) and a training stage talks over gloo (``--ddp_backend gloo``, which a
recipe's own ``ddp_backend`` overrides). A stage counts as complete once it exits cleanly and
`OUT/S/stage_complete.json` is written, so a rerun after a crash resumes at the first unfinished
stage (and a stage that writes shards resumes inside itself). The marker records a fingerprint of
the stage's command, the settings of its recipe and accelerate config (not their comments) and of the
stages before it: a complete stage whose fingerprint has changed since stops the rerun, naming it,
instead of being skipped.

Recipes name their inputs by the folder's default outputs (``outputs/toy/policy``); when the
pipeline writes elsewhere (``--output_dir``), every recipe value under ``outputs/<folder name>/``
is redirected to the same place under the chosen output folder. ``--set STAGE.KEY=VALUE`` overrides
one key of one stage.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from ponder.training.cli import STAGES
from ponder.training.core.configs import RecipeParser, load_yaml, redact_command
from ponder.training.core.outputs import write_json_atomic

STAGE_ORDER = ["model", "policy", "label", "prm", "orm", "revisions", "revision", "evaluate"]
TRAINING_STAGES = {"policy", "prm", "orm", "revision"}  # their recipes hold TrainingArguments
DISTRIBUTED_STAGES = TRAINING_STAGES | {"label", "revisions"}
COMPLETE_MARKER = "stage_complete.json"


def launch_config(recipe_dir: Path, stage: str) -> Path | None:
    """The accelerate config that launches `stage`: the folder's ``accelerate-<stage>.yaml``, else its
    ``accelerate.yaml`` for a stage that trains or shards data, else None (a plain process)."""
    own, shared = recipe_dir / f"accelerate-{stage}.yaml", recipe_dir / "accelerate.yaml"
    if own.exists():
        return own
    return shared if shared.exists() and stage in DISTRIBUTED_STAGES else None


def cpu_deepspeed(stage: str, config: Path | None) -> tuple[dict[str, str], list[str]]:
    """The environment variables and flags a DeepSpeed launch with `config` needs on a machine without a GPU.

    DeepSpeed's CPU accelerator, and for a training stage gloo: without a backend named, accelerate
    counts one process under DeepSpeed on a CPU.
    """
    if config is None or torch.cuda.is_available() or load_yaml(config).get("distributed_type") != "DEEPSPEED":
        return {}, []
    environment = {} if "DS_ACCELERATOR" in os.environ else {"DS_ACCELERATOR": "cpu"}
    return environment, ["--ddp_backend", "gloo"] if stage in TRAINING_STAGES else []


def stage_command(stage: str, recipe: Path, output_dir: Path, accelerate_config: Path | None) -> list[str]:
    """The command line that runs one stage."""
    if accelerate_config is not None:
        launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config)]
    else:
        launcher = [sys.executable]
    module = STAGES[stage][0]
    return [*launcher, "-m", module, "--config", str(recipe), "--output_dir", str(output_dir)]


def redirected_inputs(recipe: Path, default_root: Path, output_root: Path) -> list[str]:
    """``--key value`` flags that move the recipe's paths under `default_root` to `output_root`."""
    if default_root.resolve() == output_root.resolve():
        return []
    flags = []
    for key, value in load_yaml(recipe).items():
        if key != "output_dir" and isinstance(value, str) and Path(value).is_relative_to(default_root):
            flags += [f"--{key}", str(output_root / Path(value).relative_to(default_root))]
    return flags


def parse_overrides(settings: list[str], stages: list[str]) -> tuple[dict[str, list[str]], dict[str, dict[str, str]]]:
    """``STAGE.KEY=VALUE`` settings as per-stage ``--KEY VALUE`` flags, and per-stage environment variables.

    Each key is checked against its stage's configuration before any stage runs. A ``hub_token`` goes to
    its stage as ``HF_TOKEN`` in the environment, never on a command line, where process listings and a
    failed launch's error message would show it.
    """
    flags: dict[str, list[str]] = {}
    secrets: dict[str, dict[str, str]] = {}
    for setting in settings:
        name, separator, value = setting.partition("=")
        stage, dot, key = name.partition(".")
        if not separator or not dot or not key:
            raise SystemExit(f"--set {name!r}: use STAGE.KEY=VALUE, e.g. policy.max_steps=100")
        if stage not in stages:
            raise SystemExit(f"--set {name!r}: no stage {stage!r} in this recipe folder ({', '.join(stages)})")
        if key not in stage_keys(stage):
            raise SystemExit(f"--set {name!r}: the {stage} stage has no key {key!r} (see `ponder {stage} --help`)")
        if key == "hub_token":
            secrets.setdefault(stage, {})["HF_TOKEN"] = value
        else:
            flags.setdefault(stage, []).extend([f"--{key}", *value.split()])
    return flags, secrets


@functools.cache
def stage_keys(stage: str) -> frozenset[str]:
    """Every key of `stage`'s recipe and flags (its parser built once, however many settings name it)."""
    module = importlib.import_module(STAGES[stage][0])
    return frozenset(RecipeParser(module.CONFIG_TYPES).hints)


def run_pipeline(
    recipe_dir: Path,
    output_root: Path,
    settings: list[str] = (),
    only: list[str] | None = None,
    accelerate_config: Path | None = None,
) -> dict:
    """Run every stage of `recipe_dir` (or of `only`) that is not complete yet; returns a per-stage record.

    `accelerate_config` launches every stage that trains or shards data in place of the folder's configs.
    """
    stages = [s for s in STAGE_ORDER if (recipe_dir / f"{s}.yaml").exists()]
    if not stages:
        raise SystemExit(f"{recipe_dir}: no stage recipes found (expected some of {', '.join(STAGE_ORDER)} .yaml)")
    if only:
        unknown = sorted(set(only) - set(stages))
        if unknown:
            raise SystemExit(f"--stages: {', '.join(unknown)} not in this recipe folder ({', '.join(stages)})")
        stages = [s for s in stages if s in only]
    overrides, secrets = parse_overrides(list(settings), stages)
    default_root = Path("outputs") / recipe_dir.resolve().name
    record = {}
    for number, stage in enumerate(stages, 1):
        output_dir = output_root / stage
        marker = output_dir / COMPLETE_MARKER
        recipe = recipe_dir / f"{stage}.yaml"
        config = launch_config(recipe_dir, stage)
        if accelerate_config is not None and stage in DISTRIBUTED_STAGES:
            config = accelerate_config
        environment, flags = cpu_deepspeed(stage, config)
        command = stage_command(stage, recipe, output_dir, config) + flags
        command += redirected_inputs(recipe, default_root, output_root) + overrides.get(stage, [])
        recorded = redact_command(command)
        earlier = [_read(output_root / s / COMPLETE_MARKER) or {} for s in STAGE_ORDER[: STAGE_ORDER.index(stage)]]
        inputs = (
            recorded,
            output_root,
            [recipe] + ([config] if config else []),
            [m.get("fingerprint", "") for m in earlier],
        )
        fingerprint = launch_fingerprint(*inputs)
        if marker.exists():
            done = json.loads(marker.read_text())
            if done.get("fingerprint") not in (fingerprint, launch_fingerprint(*inputs, settings_only=False)):
                raise SystemExit(
                    f"[{number}/{len(stages)}] {stage}: completed by another run ({marker}): its recipe, command, "
                    f"accelerate config or an earlier stage has changed since; run into a new --output_dir, or "
                    f"remove {output_dir} and the stages after it to run it again"
                )
            print(f"[{number}/{len(stages)}] {stage}: complete, skipped ({marker})", flush=True)
            record[stage] = done | {"skipped": True}
            continue
        shown = [f"{key}={value}" for key, value in environment.items()] + recorded
        print(f"[{number}/{len(stages)}] {stage}: {' '.join(shown)}", flush=True)
        start = time.monotonic()
        result = subprocess.run(command, env=os.environ | environment | secrets.get(stage, {}))
        if result.returncode != 0:
            raise SystemExit(f"stage {stage!r} failed with exit code {result.returncode}; rerun to resume")
        seconds = round(time.monotonic() - start, 1)
        record[stage] = {"command": recorded, "environment": environment, "seconds": seconds}
        record[stage]["fingerprint"] = fingerprint
        write_json_atomic(marker, record[stage])
    return record


def launch_fingerprint(
    command: list[str], output_root: Path, files: list[Path], earlier: list[str], settings_only: bool = True
) -> str:
    """A digest of what a stage's run depends on: its command (the output folder written as ``<OUT>``, so a
    moved folder keeps it), the settings of the recipe and accelerate config it reads, and the fingerprints of
    the stages before it, so that a stage run again upstream makes the stages after it stale.

    The files count by the settings they hold, so editing a comment or the layout leaves a finished stage
    reusable; `settings_only` False digests their text instead, as the markers of earlier ponder versions did.
    """
    digest = hashlib.sha256()
    read = _settings_text if settings_only else Path.read_text
    parts = [*(arg.replace(str(output_root), "<OUT>") for arg in command), *map(read, files), *earlier]
    for part in parts:
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:16]


def _settings_text(path: Path) -> str:
    """The settings of a YAML file as canonical JSON: the same for any comments or layout."""
    return json.dumps(load_yaml(path), sort_keys=True, default=str)


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _per_level(values: dict) -> str:
    return ", ".join(f"L{level} {value:.2f}" for level, value in values.items())


def summary(output_root: Path) -> str:
    """Headline numbers of the stages that have run, each with the file it comes from."""
    lines = []
    if policy := _read(output_root / "policy" / "eval.json"):
        lines.append(f"policy pass@1: {_per_level(policy['pass_at_1'])}  ({output_root / 'policy' / 'eval.json'})")
    if labels := _read(output_root / "label" / "stats.json"):
        agreement = labels.get("oracle_agreement", {}).get("all", {}).get("step_agreement")
        lines.append(
            f"labels: {labels['rows']} solutions, {labels['rollouts']} rollouts ({labels['mode']})"
            + (f", step agreement with the oracle {agreement:.3f}" if agreement is not None else "")
        )
    for kind in ("prm", "orm"):
        verifier, source = _read(output_root / kind / "eval_results.json"), output_root / kind / "eval_results.json"
        if verifier and "oracle" in verifier:
            judged = verifier["oracle"]["verifier"]["all"]
            lines.append(
                f"{kind}: within-problem AUC step {_number(judged['step_auc_within_problem'])}, "
                f"solution {_number(judged['solution_auc_within_problem'])}; weighted BoN "
                f"{_number(judged['weighted_bon'])} vs majority {_number(judged['majority_bon'])}  ({source})"
            )
        elif verifier and "held_out_rows" in verifier:
            held_out = verifier["held_out_rows"]["all"]
            lines.append(
                f"{kind}: {held_out['rows']} held-out rows, solution AUC {_number(held_out['solution_auc'])}, "
                f"within problems {_number(held_out['solution_auc_within_problem'])}  ({source})"
            )
    if revision := _read(output_root / "revision" / "eval.json"):
        if turns := revision.get("pass_at_1_per_turn"):
            lines.append(
                "revision pass@1 turn 1 -> last: "
                + ", ".join(f"L{level} {values[0]:.2f}->{values[-1]:.2f}" for level, values in turns.items())
            )
            if gains := revision["evaluation"].get("gains_over_controls"):
                lines.append(
                    "revision gain at the last turn over the stronger no-context control (paired standard error): "
                    + ", ".join(
                        f"L{level} {gain['gain']:+.3f} ({_number(gain['standard_error'])})"
                        for level, gain in _last_turn_gains(gains).items()
                    )
                )
        elif revision["training"].get("untrained"):
            lines.append("revision: no trajectories; the base model, untrained, is the revision model")
    report = output_root / "evaluate" / "report.md"
    if report.exists():
        headline = _read(output_root / "evaluate" / "report.json") or {}
        if "efficiency_ratio" in headline:
            efficiency = headline.get("efficiency", {})
            lines.append(
                f"compute-optimal efficiency ratio: {_number(headline['efficiency_ratio'])} "
                f"against {efficiency.get('reference')} "
                f"(its gain over N = 1: {_number(efficiency.get('reference_gain_over_n1'))}, "
                f"standard error {_number(efficiency.get('standard_error'))})"
            )
        lines.append(f"report: {report}")
    return "\n".join(lines)


def _last_turn_gains(gains_over_controls: dict) -> dict:
    """Per level, the revision model's last-turn gain over the control it leads by least."""
    levels = next(iter(gains_over_controls.values()))
    return {
        level: min((per_level[level][-1] for per_level in gains_over_controls.values()), key=lambda g: g["gain"])
        for level in levels
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ponder pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("recipe_dir", type=Path, help="folder of stage recipes, e.g. recipes/toy")
    parser.add_argument("--output_dir", type=Path, default=None, help="default: outputs/<recipe folder name>")
    parser.add_argument("--set", action="append", default=[], metavar="STAGE.KEY=VALUE", help="override a stage key")
    parser.add_argument(
        "--stages",
        type=lambda text: text.split(","),
        help="comma-separated stages to run (default: all of the folder's)",
    )
    parser.add_argument(
        "--accelerate_config", type=Path, help="launch every training and data stage with this accelerate config"
    )
    args = parser.parse_args(argv)
    if not args.recipe_dir.is_dir():
        raise SystemExit(f"ponder pipeline: {args.recipe_dir} is not a folder")
    output_root = args.output_dir or Path("outputs") / args.recipe_dir.resolve().name
    run_pipeline(args.recipe_dir, output_root, args.set, args.stages, args.accelerate_config)
    print(summary(output_root), flush=True)


if __name__ == "__main__":
    main()
