"""ORM stage: an outcome verifier on the policy's own samples (is the final answer right?).

    ponder orm --config recipes/toy/orm.yaml
    accelerate launch --config_file accelerate_configs/zero2.yaml -m ponder.training.orm \\
        --config recipes/toy/orm.yaml

The same data, trainer and outputs as the PRM stage (`ponder.training.prm`), with a sequence
classification head labelled once per solution from `answer_correct`.
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
    if config.head != "orm":
        raise ValueError(f"head: the ORM stage trains head 'orm', got {config.head!r}")
    return run_verifier_stage(config, args, target="answer")


if __name__ == "__main__":
    main()
