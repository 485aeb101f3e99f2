"""ORM stage: an outcome verifier on the policy's own samples (is the final answer right?).

    ponder orm --config recipes/toy/orm.yaml
    accelerate launch --config_file accelerate_configs/zero2.yaml -m ponder.training.orm \\
        --config recipes/toy/orm.yaml

The same data, trainer and outputs as the PRM stage (`ponder.training.prm`), with a sequence
classification head labelled once per solution from `answer_correct`.
"""

from __future__ import annotations

import logging

from transformers import TrainingArguments

from ponder.training.configs import parse_config
from ponder.training.prm import VerifierConfig, train_verifier

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config, args = parse_config((VerifierConfig, TrainingArguments), argv)
    if config.head != "orm":
        raise ValueError(f"head: the ORM stage trains head 'orm', got {config.head!r}")
    record = train_verifier(config, args, target="answer")
    if record:
        logger.info("eval results: %s", {k: v for k, v in record.items() if k not in ("oracle", "training")})
    return record


if __name__ == "__main__":
    main()
