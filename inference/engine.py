"""How a checkpoint is loaded for generation and scoring: backend, dtype, device and vLLM engine settings.

`EngineConfig` is the one set of keys every stage that samples or scores takes from its recipe.
With ``backend: vllm`` each process builds one engine on its own GPUs: process ``cuda:N`` with
``tensor_parallel_size: T`` owns GPUs ``N·T … N·T + T − 1`` of those visible, so launch
``GPUs / T`` processes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from dataclasses import dataclass, field

import torch

BACKENDS = ("auto", "hf", "vllm")
SAMPLING_SEEDS = ("engine", "request")


@dataclass
class EngineConfig:
    """Backend and loading settings for the models a stage samples from or scores with."""

    backend: str = field(
        default="auto",
        metadata={
            "help": "generation/scoring backend: 'hf' (transformers), 'vllm', or 'auto' (vLLM when installed "
            "and a GPU is visible)"
        },
    )
    dtype: str = field(
        default="auto",
        metadata={"help": "weights' dtype: 'auto' (the checkpoint's), 'float32', 'bfloat16' or 'float16'"},
    )
    attn_implementation: str | None = field(
        default=None,
        metadata={"help": "transformers attention kernel: 'sdpa', 'flash_attention_2', 'eager'; unset: the default"},
    )
    gpu_memory_utilization: float = field(
        default=0.9, metadata={"help": "vLLM: fraction of each of its GPUs one engine may take (weights + KV cache)"}
    )
    tensor_parallel_size: int = field(
        default=1, metadata={"help": "vLLM: GPUs one engine spans; each process owns this many GPUs"}
    )
    max_model_len: int | None = field(
        default=None, metadata={"help": "vLLM: longest prompt + completion in tokens; unset: the model's positions"}
    )
    enforce_eager: bool = field(
        default=False, metadata={"help": "vLLM: skip CUDA graphs / compilation (faster start, slower decoding)"}
    )
    enable_prefix_caching: bool = field(
        default=True, metadata={"help": "vLLM: reuse the KV cache of prompt prefixes shared between requests"}
    )
    sampling_seeds: str = field(
        default="engine",
        metadata={
            "help": "vLLM: 'engine' (one seeded generator per engine, batched sampling) or 'request' (a "
            "seed per distinct prompt: reproducible per call, sampled row by row)"
        },
    )

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"backend: unknown backend {self.backend!r}; use one of {BACKENDS}")
        if self.sampling_seeds not in SAMPLING_SEEDS:
            raise ValueError(f"sampling_seeds: use one of {SAMPLING_SEEDS}, got {self.sampling_seeds!r}")
        if self.dtype != "auto" and not isinstance(getattr(torch, self.dtype, None), torch.dtype):
            raise ValueError(f"dtype: {self.dtype!r} is not a torch dtype; use 'auto', 'float32', 'bfloat16', ...")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization: a fraction in (0, 1], got {self.gpu_memory_utilization}")
        if self.tensor_parallel_size < 1:
            raise ValueError(f"tensor_parallel_size: at least 1, got {self.tensor_parallel_size}")

    def hf_kwargs(self) -> dict:
        """`from_pretrained` keyword arguments for a transformers model."""
        kwargs: dict = {"dtype": self.dtype}
        if self.attn_implementation:
            kwargs["attn_implementation"] = self.attn_implementation
        return kwargs

    def uses_vllm(self) -> bool:
        """Whether this backend means vLLM on this machine."""
        return self.backend == "vllm" or (self.backend == "auto" and vllm_available())


def vllm_available() -> bool:
    """True when vLLM is installed and a CUDA GPU is visible."""
    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


def default_device(device: str | None = None) -> str:
    """`device` when given, else the first GPU when there is one, else the CPU."""
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def engine_gpus(device: str | None, tensor_parallel_size: int, visible: str | None) -> str | None:
    """The ``CUDA_VISIBLE_DEVICES`` value for the engine of the process on `device`, or None to leave it.

    Process ``cuda:N`` owns the N-th block of `tensor_parallel_size` GPUs among the `visible` ones
    (a comma-separated list; unset means all GPUs of the machine, numbered from 0).
    """
    if device is None or not device.startswith("cuda"):
        return None
    index = int(device.split(":")[1]) if ":" in device else 0
    owned = range(index * tensor_parallel_size, (index + 1) * tensor_parallel_size)
    ids = visible.split(",") if visible else [str(i) for i in range(max(owned) + 1)]
    if max(owned) >= len(ids):
        raise ValueError(
            f"{device} with tensor_parallel_size {tensor_parallel_size} needs GPUs {list(owned)}, "
            f"but only {len(ids)} are visible; launch (visible GPUs / tensor_parallel_size) processes"
        )
    return ",".join(ids[i] for i in owned)


@contextlib.contextmanager
def visible_gpus(value: str | None):
    """Set ``CUDA_VISIBLE_DEVICES`` while an engine starts (its worker processes inherit it), then restore it."""
    if value is None:
        yield
        return
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = value
    try:
        yield
    finally:
        if before is None:
            del os.environ["CUDA_VISIBLE_DEVICES"]
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = before


def build_vllm_engine(model_path: str, engine: EngineConfig, seed: int = 0, device: str | None = None, **kwargs):
    """A `vllm.LLM` for `model_path` on the GPUs that `device` owns; `kwargs` go to `LLM` (e.g. ``runner``)."""
    from vllm import LLM

    settings = {
        "model": str(model_path),
        "dtype": engine.dtype,
        "seed": seed,
        "gpu_memory_utilization": engine.gpu_memory_utilization,
        "tensor_parallel_size": engine.tensor_parallel_size,
        "max_model_len": engine.max_model_len,
        "enforce_eager": engine.enforce_eager,
        "enable_prefix_caching": engine.enable_prefix_caching,
        **kwargs,
    }
    gpus = engine_gpus(device, engine.tensor_parallel_size, os.environ.get("CUDA_VISIBLE_DEVICES"))
    with visible_gpus(gpus):
        return LLM(**settings)
