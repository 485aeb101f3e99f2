"""Layouts of third-party PRMs, so that `load_verifier(path, format=...)` scores checkpoints without ``ponder.json``.

Each entry holds what a ``ponder.json`` would: the verifier kind, `StepFormat` fields and label tokens.

- ``math-shepherd`` (peiyi9979/math-shepherd-mistral-7b-prm): a causal LM over the plain text
  ``question + " " + step_1 + " ки\\n" + step_2 + " ки\\n" ...`` (the tokenizer's BOS first); a step's
  score is P(``+``) / (P(``+``) + P(``-``)) from the LM head at its ``ки``.
- ``qwen2.5-math-prm`` (the text layout of Qwen/Qwen2.5-Math-PRM-7B): a chat with a fixed system prompt,
  the question as the user turn and, as the assistant's turn, every step followed by ``<extra_0>`` with
  nothing between; a step's score is the class-1 probability of a two-class head at its ``<extra_0>``.
  It loads as released (``Qwen2ForProcessRewardModel``, whose head is Linear → ReLU → Linear under
  ``score.0`` and ``score.2``: `two_layer_head` installs it on a token-classification model, so no remote
  code runs), and so does any `AutoModelForTokenClassification` checkpoint with two labels.
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
    "rlhflow": {
        "kind": "prm_causal_lm",
        "prompt_template": "chat_turns",
        "question_separator": " ",
        "turn_reply": "+",
        "positive_token": "+",
        "negative_token": "-",
    },
}


def two_layer_head(path: str | Path, hidden_size: int) -> torch.nn.Sequential | None:
    """The checkpoint's Linear → ReLU → Linear head (``score.0``, ``score.2``), or None when it has none.

    That is the head of Qwen2.5-Math-PRM's ``Qwen2ForProcessRewardModel``; transformers' token
    classification models have a single ``score`` Linear, so the released weights need this head.
    """
    from safetensors import safe_open

    weights = {}
    for file in sorted(Path(path).glob("*.safetensors")):
        with safe_open(file, framework="pt") as f:
            heads = [key for key in f.keys() if key.startswith("score.")]  # noqa: SIM118 (a safe_open is not iterable)
            weights.update({key: f.get_tensor(key) for key in heads})
    if not {"score.0.weight", "score.2.weight"} <= set(weights):
        return None
    inner, labels = weights["score.0.weight"].shape[0], weights["score.2.weight"].shape[0]
    head = torch.nn.Sequential(
        torch.nn.Linear(hidden_size, inner, bias="score.0.bias" in weights),
        torch.nn.ReLU(),
        torch.nn.Linear(inner, labels, bias="score.2.bias" in weights),
    )
    head.load_state_dict({key.removeprefix("score."): value for key, value in weights.items()})
    return head
