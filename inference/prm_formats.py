"""Layouts of third-party PRMs, so that `load_verifier(path, format=...)` scores checkpoints without ``ponder.json``.

Each entry holds what a ``ponder.json`` would: the verifier kind, `StepFormat` fields and label tokens.

- ``math-shepherd`` (peiyi9979/math-shepherd-mistral-7b-prm): a causal LM over the plain text
  ``question + " " + step_1 + " ки\\n" + step_2 + " ки\\n" ...`` (the tokenizer's BOS first); a step's
  score is P(``+``) / (P(``+``) + P(``-``)) from the LM head at its ``ки``.
- ``qwen2.5-math-prm`` (the text layout of Qwen/Qwen2.5-Math-PRM-7B): a chat with a fixed system prompt,
  the question as the user turn and, as the assistant's turn, every step followed by ``<extra_0>`` with
  nothing between; a step's score is the class-1 probability of a two-class head at its ``<extra_0>``.
  What loads is a checkpoint of any `AutoModelForTokenClassification` architecture with two labels
  (e.g. ``Qwen2ForTokenClassification``). The released model is remote code
  (``Qwen2ForProcessRewardModel``, a two-layer head under its own weight names): convert its head to that
  layout first; loaded as it is, its head weights are missing and `load_verifier` refuses it.
- ``rlhflow`` (RLHFlow/Llama3.1-8B-PRM-Mistral-Data and -Deepseek-Data): a causal LM over a chat in which
  each step is a user turn (the first one is the question, a space and the step) and the assistant
  answers every turn with ``+``; a step's score is P(``+``) / (P(``+``) + P(``-``)) at the last token
  before its reply.
"""

from __future__ import annotations

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
