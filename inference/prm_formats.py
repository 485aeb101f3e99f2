"""Layouts of third-party PRMs, so that `load_verifier(path, format=...)` scores checkpoints without ``ponder.json``.

Each entry holds what a ``ponder.json`` would: the verifier kind, `StepFormat` fields and label tokens.

- ``math-shepherd`` (peiyi9979/math-shepherd-mistral-7b-prm): a causal LM over the plain text
  ``question + " " + step_1 + " ки\\n" + step_2 + " ки\\n" ...`` (the tokenizer's BOS first); a step's
  score is P(``+``) / (P(``+``) + P(``-``)) from the LM head at its ``ки``.
- ``qwen2.5-math-prm`` (the text layout of Qwen/Qwen2.5-Math-PRM-7B): a chat with a fixed system prompt,
  the question as the user turn and, as the assistant's turn, every step followed by ``<extra_0>`` with
  nothing between; a step's score is the class-1 probability of a two-class head at its ``<extra_0>``.
  It loads as released (``Qwen2ForProcessRewardModel``, whose head is Linear → ReLU → Linear under
  ``score.0`` and ``score.2``: `released_head` installs it on a token-classification model, so no remote
  code runs), and so does any `AutoModelForTokenClassification` checkpoint with two labels.
- ``skywork-prm`` (Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B and -7B): the plain text ``BOS + question +
  "\\n"`` followed by every step and a ``"\\n"``; a step's score is the sigmoid of a one-output value head
  at its ``"\\n"``. It loads as released (``Qwen2ForPrmModel``, whose head is ``v_head.summary``, a
  Linear to one output: `released_head` installs it), with transformers; vLLM has no such architecture.
- ``rlhflow`` (RLHFlow/Llama3.1-8B-PRM-Mistral-Data and -Deepseek-Data): a causal LM over a chat in which
  each step is a user turn (the first one is the question, a space and the step) and the assistant
  answers every turn with ``+``; a step's score is P(``+``) / (P(``+``) + P(``-``)) at the last token
  before its reply.
"""

from __future__ import annotations

from pathlib import Path

import torch

QWEN_MATH_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."

PRM_FORMATS: dict[str, dict] = {
    "math-shepherd": {
        "kind": "prm_causal_lm",
        "prompt_template": "plain",
        "question_separator": " ",
        "step_delimiter": "\n",
        "step_tag": " ки",
        "positive_token": "+",
        "negative_token": "-",
    },
    "qwen2.5-math-prm": {
        "kind": "prm_token_classification",
        "prompt_template": "chat",
        "system_prompt": QWEN_MATH_SYSTEM_PROMPT,
        "step_delimiter": "",
        "step_tag": "<extra_0>",
    },
    "skywork-prm": {
        "kind": "prm_token_classification",
        "prompt_template": "plain",
        "begin_with_bos": True,
        "question_separator": "\n",
        "step_delimiter": "",
        "step_tag": "\n",
        "vllm_pooling": False,
    },
    "rlhflow": {
        "kind": "prm_causal_lm",
        "prompt_template": "chat_turns",
        "question_separator": " ",
        "turn_reply": "+",
        "positive_token": "+",
        "negative_token": "-",
    },
}


def released_head(path: str | Path) -> torch.nn.Module | None:
    """The head a released token-classification PRM keeps under another name or shape, or None when it has none.

    - Qwen2.5-Math-PRM (``Qwen2ForProcessRewardModel``): Linear → ReLU → Linear under ``score.0`` and
      ``score.2``;
    - Skywork-o1-Open-PRM (``Qwen2ForPrmModel``): one Linear to a single output under ``v_head.summary``.

    transformers' token-classification models have a single ``score`` Linear, so these weights need their head.
    """
    weights = _tensors_named(path, ("score.", "v_head.summary."))
    if {"score.0.weight", "score.2.weight"} <= set(weights):
        return torch.nn.Sequential(_linear(weights, "score.0"), torch.nn.ReLU(), _linear(weights, "score.2"))
    if "v_head.summary.weight" in weights:
        return _linear(weights, "v_head.summary")
    return None


def _tensors_named(path: str | Path, prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    weights = {}
    for file in sorted(Path(path).glob("*.safetensors")):
        with safe_open(file, framework="pt") as f:
            names = [key for key in f.keys() if key.startswith(prefixes)]  # noqa: SIM118 (a safe_open is not iterable)
            weights.update({key: f.get_tensor(key) for key in names})
    return weights


def _linear(weights: dict[str, torch.Tensor], name: str) -> torch.nn.Linear:
    """A Linear layer holding ``name.weight`` (and ``name.bias`` when present)."""
    weight, bias = weights[f"{name}.weight"], weights.get(f"{name}.bias")
    layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    layer.load_state_dict({"weight": weight} | ({} if bias is None else {"bias": bias}))
    return layer
