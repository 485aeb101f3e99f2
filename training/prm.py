"""PRM stage: fine-tune a process reward model on stepwise labels (ponder's own trainer; TRL has none).

    ponder prm --config recipes/toy/prm.yaml
    accelerate launch --config_file accelerate_configs/zero3.yaml -m ponder.training.prm \\
        --config recipes/toy/prm.yaml

The data, trainer, outputs and judging are `ponder.training.verifiers.stage`.
"""

from __future__ import annotations

from transformers import TrainingArguments

from ponder.training.core.configs import parse_config
from ponder.training.core.logs import setup_logging
from ponder.training.verifiers.stage import VerifierConfig, run_verifier_stage

CONFIG_TYPES = (VerifierConfig, TrainingArguments)  # what the stage's recipe and flags fill


def main(argv: list[str] | None = None) -> dict:
    setup_logging()
    config, args = parse_config(CONFIG_TYPES, argv)
    return run_verifier_stage(config, args)


if __name__ == "__main__":
    main()
