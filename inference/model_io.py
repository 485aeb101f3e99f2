"""The KV-cache argument of a transformers forward pass, under both of its names.

transformers renamed a model's ``past_key_values`` argument and output field to ``cache`` (the old
name is deprecated, to go in 5.40); vLLM's CPU and GPU builds pin releases from before the rename.
"""

from __future__ import annotations

import functools
import inspect


@functools.cache
def _cache_name(forward_type: type) -> str:
    parameters = inspect.signature(forward_type.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def cache_argument(model, cache) -> dict:
    """``{name: cache}`` for `model`'s forward, whichever name it takes."""
    return {_cache_name(type(model)): cache}


def returned_cache(output):
    """The cache a forward pass returned, under whichever name its output carries it."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values
