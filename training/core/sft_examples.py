"""Tokenized supervised examples whose prompt is exactly what inference feeds the model.

A chat prompt rendered with the generation prompt (as `generate` sees it), then the answer and EOS,
with the loss on the answer and EOS only. Rendering the whole chat instead (TRL's conversational
path) also trains whatever the template writes after the final EOS, e.g. a newline a model never
generates: on the toy policy that single token costs about 20 nats per row before training.
"""

from __future__ import annotations


def chat_example(tokenizer, messages: list[dict], answer: str) -> dict:
    """``{input_ids, labels}`` for `answer` after the chat `messages`; prompt positions are labelled -100."""
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return {"input_ids": prompt_ids + answer_ids, "labels": [-100] * len(prompt_ids) + answer_ids}


def multi_turn_example(tokenizer, exchanges: list[tuple[str, str]]) -> dict:
    """``{input_ids, labels}`` of a chat of (question, answer) exchanges with every answer and its EOS trained.

    Each answer is tokenized after the chat before it exactly as `chat_example` renders it, so the
    template must render a finished chat as a prefix of its continuation (the toy template does).
    """
    messages: list[dict] = []
    example: dict = {"input_ids": [], "labels": []}
    for question, answer in exchanges:
        messages.append({"role": "user", "content": question})
        turn = chat_example(tokenizer, messages, answer)
        done = len(example["input_ids"])
        if turn["input_ids"][:done] != example["input_ids"]:
            raise ValueError("the chat template does not render a finished chat as a prefix of its continuation")
        example = {"input_ids": turn["input_ids"], "labels": example["labels"] + turn["labels"][done:]}
        messages.append({"role": "assistant", "content": answer})
    return example
