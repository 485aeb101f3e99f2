"""The `ponder` command: one subcommand per stage, each also runnable as `python -m ponder.training.<stage>`."""

from __future__ import annotations

import importlib
import sys

STAGES = {
    "model": ("ponder.training.model", "a checkpoint folder from a GGUF file (a path or a file in a Python package)"),
    "policy": ("ponder.training.policy", "train a toy policy from scratch (toy world)"),
    "label": ("ponder.training.labels", "Monte-Carlo-rollout PRM labels from the policy's own samples"),
    "prm": ("ponder.training.prm", "fine-tune a process reward model on stepwise labels"),
    "orm": ("ponder.training.orm", "fine-tune an outcome reward model on the policy's graded samples"),
    "revisions": ("ponder.training.revisions", "on-policy revision trajectories from the policy's own samples"),
    "revision": ("ponder.training.revision", "fine-tune a revision model on revision trajectories (TRL SFT)"),
    "revision_samples": ("ponder.training.revision_samples", "the revision model's graded attempts: revision ORM data"),
    "evaluate": ("ponder.training.evaluate", "strategies x budgets on test problems, difficulty bins, compute-optimal"),
    "pipeline": ("ponder.training.pipeline", "run a recipe folder's stages in order, resuming finished ones"),
    "convert-gguf": ("ponder.inference.gguf", "turn a GGUF model file into a Hugging Face checkpoint folder"),
    "push": ("ponder.training.push", "upload a checkpoint (with a model card) or a dataset folder to the Hub"),
}


def usage() -> str:
    lines = ["usage: ponder <command> [--config FILE] [--key value ...]", "", "commands:"]
    lines += [f"  {name:<17} {summary}" for name, (_, summary) in STAGES.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return
    if argv[0] not in STAGES:
        sys.exit(f"ponder: unknown command {argv[0]!r}\n\n{usage()}")
    module = importlib.import_module(STAGES[argv[0]][0])
    module.main(argv[1:])


if __name__ == "__main__":
    main()
