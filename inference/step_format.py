"""How a (question, steps) pair becomes verifier tokens: the one function training and inference share.

The joined text is tokenized once and each step's scoring position is found by character offsets,
so the labelled token in training is exactly the scored token at inference (TRL's PRM trainer
tokenized steps separately and joined them at inference, and the labelled token could move).
With a step tag (Math-Shepherd's ``ки``) each step is followed by the tag and the score is read at
the tag, which must be exactly one token in context; without one the score is read at the token
that holds the step's last character (an empty step is read at the delimiter before it). In the
``chat_turns`` layout (RLHFlow's PRMs) each step is a user turn answered by a fixed assistant reply,
and the score is read at the last token before the reply.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

PROMPT_TEMPLATES = ("chat", "plain", "chat_turns")


@dataclass(frozen=True)
class StepFormat:
    """Text layout of a scored solution; stored in a verifier's ``ponder.json``.

    `prompt_template` is ``"chat"`` (the question as a user turn, steps as the assistant's answer),
    ``"plain"`` (question, separator, steps; begun the way the tokenizer begins any text, e.g. with its
    BOS token) or ``"chat_turns"`` (each step a user turn, the first one prefixed by the question and
    the separator, each answered by the assistant with `turn_reply`; `step_delimiter` and `step_tag`
    are unused). `question_separator` defaults to the step delimiter; `system_prompt`, when set, opens
    the chat layouts. The delimiter may be empty when a step tag alone separates the steps.
    `begin_with_bos` puts the tokenizer's BOS token before a ``"plain"`` text even where the tokenizer
    adds none itself (Skywork's PRMs read ``BOS + question``).
    """

    step_delimiter: str = "\n"
    step_tag: str | None = None
    prompt_template: str = "chat"
    question_separator: str | None = None
    system_prompt: str | None = None
    turn_reply: str | None = None
    begin_with_bos: bool = False

    def __post_init__(self):
        if self.prompt_template not in PROMPT_TEMPLATES:
            raise ValueError(f"prompt_template must be one of {PROMPT_TEMPLATES}, got {self.prompt_template!r}")
        if not self.step_delimiter and self.step_tag is None and self.prompt_template != "chat_turns":
            raise ValueError("step_delimiter must not be empty unless a step tag separates the steps")
        if (self.prompt_template == "chat_turns") != (self.turn_reply is not None):
            raise ValueError("turn_reply is the assistant's reply in the 'chat_turns' layout: set it there only")
        if self.prompt_template == "chat_turns" and self.step_tag is not None:
            raise ValueError("the 'chat_turns' layout reads scores before the reply; it takes no step_tag")
        if self.begin_with_bos and self.prompt_template != "plain":
            raise ValueError("begin_with_bos is for the 'plain' layout; chat templates write their own BOS")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EncodedSteps:
    """Token ids of one joined text, each kept step's first and scoring token, and what was cut."""

    input_ids: list[int]
    step_positions: list[int]
    dropped_steps: int
    step_starts: list[int]


def step_spans(encoded: EncodedSteps) -> list[range]:
    """Token indices of each kept step, from its first token to its scoring token."""
    return [range(start, end + 1) for start, end in zip(encoded.step_starts, encoded.step_positions)]


class StepTagError(ValueError):
    """The step tag did not come out as exactly one token where it was placed."""


def render(
    tokenizer, fmt: StepFormat, question: str, steps: list[str], bos_text: str = ""
) -> tuple[str, list[int], list[int]]:
    """The joined text and, per step, its first character and one past the character that is scored;
    a ``"plain"`` text begins with `bos_text` (`_bos_text`, found once per batch)."""
    if fmt.prompt_template == "chat_turns":
        return _render_turns(tokenizer, fmt, question, steps)
    if fmt.prompt_template == "chat":
        text = _chat_prefix(tokenizer, fmt, [{"role": "user", "content": question}])
    else:
        text = bos_text + question + _question_separator(fmt)
    starts, ends = [], []
    for step in steps:
        starts.append(len(text))
        text += step
        if fmt.step_tag is not None:
            text += fmt.step_tag
        ends.append(len(text))
        text += fmt.step_delimiter
    return text, starts, ends


def _bos_text(tokenizer, fmt: StepFormat) -> str:
    """The BOS token's text when `fmt` begins with it and the tokenizer would not add it anyway."""
    if not fmt.begin_with_bos or tokenizer.bos_token is None:
        return ""
    return "" if tokenizer.bos_token_id in tokenizer("")["input_ids"] else tokenizer.bos_token


def _question_separator(fmt: StepFormat) -> str:
    return fmt.step_delimiter if fmt.question_separator is None else fmt.question_separator


def _chat_prefix(tokenizer, fmt: StepFormat, messages: list[dict]) -> str:
    """The chat template's text for the system prompt (if any) and `messages`, up to the assistant's turn."""
    system = [] if fmt.system_prompt is None else [{"role": "system", "content": fmt.system_prompt}]
    return tokenizer.apply_chat_template(system + messages, tokenize=False, add_generation_prompt=True)


def _render_turns(tokenizer, fmt: StepFormat, question: str, steps: list[str]) -> tuple[str, list[int], list[int]]:
    """The ``chat_turns`` layout: each step a user turn; a step is scored at the end of the text before its reply.

    The text ends where the last reply would begin. Each step's first character is its last occurrence
    in its turn (the turn's start when the template rewrote the step).
    """
    if not steps:
        return _chat_prefix(tokenizer, fmt, [{"role": "user", "content": question}]), [], []
    messages, text, starts, ends = [], "", [], []
    for index, step in enumerate(steps):
        if index:
            messages.append({"role": "assistant", "content": fmt.turn_reply})
            text += fmt.turn_reply
        content = question + _question_separator(fmt) + step if index == 0 else step
        messages.append({"role": "user", "content": content})
        extended = _chat_prefix(tokenizer, fmt, messages)
        if not extended.startswith(text):
            raise ValueError("the chat template does not render a conversation as an extension of its first turns")
        found = extended.rfind(step, len(text)) if step else -1
        starts.append(found if found >= 0 else len(text))
        text = extended
        ends.append(len(text))
    return text, starts, ends


def encode_steps(
    tokenizer, fmt: StepFormat, question: str, steps: list[str], max_length: int | None = None
) -> EncodedSteps:
    """Tokenize `question` + `steps` once and locate each step's scoring token.

    Steps that do not fit in `max_length` tokens are dropped from the end and counted; the text is
    cut after the last kept step.
    """
    return encode_many(tokenizer, fmt, [question], [steps], max_length)[0]


def encode_many(
    tokenizer, fmt: StepFormat, questions: list[str], steps: list[list[str]], max_length: int | None = None
) -> list[EncodedSteps]:
    """`encode_steps` for many pairs, with one batched tokenizer call."""
    bos_text = _bos_text(tokenizer, fmt)
    rendered = [render(tokenizer, fmt, q, s, bos_text) for q, s in zip(questions, steps)]
    if not rendered:
        return []
    encodings = tokenizer(
        [text for text, _, _ in rendered],
        add_special_tokens=fmt.prompt_template == "plain",  # chat templates write their special tokens
        return_offsets_mapping=True,
    )
    return [
        _locate(tokenizer, fmt, ids, offsets, starts, ends, max_length)
        for ids, offsets, (_, starts, ends) in zip(encodings["input_ids"], encodings["offset_mapping"], rendered)
    ]


def _locate(
    tokenizer, fmt: StepFormat, input_ids, offsets, starts: list[int], ends: list[int], max_length: int | None
) -> EncodedSteps:
    """Each step's first and scoring token from the character offsets, then truncation to `max_length`.

    A step's first token is the token after the previous step's scoring token (the delimiter belongs
    to the step it opens) and, for the first step, the token holding its first character.
    """
    positions = []
    for index, end in enumerate(ends):
        token = _token_covering(offsets, end - 1)
        if fmt.step_tag is not None:
            start = end - len(fmt.step_tag)
            if token is None or tuple(offsets[token]) != (start, end):
                raise StepTagError(
                    f"step tag {fmt.step_tag!r} after step {index} is not one token in context "
                    f"(tokens there: {tokenizer.convert_ids_to_tokens(_tokens_overlapping(offsets, start, end))})"
                )
        elif token is None:
            raise ValueError(f"step {index}: no token covers its last character")
        elif fmt.turn_reply is not None and offsets[token][1] != end:
            raise StepTagError(
                f"the reply {fmt.turn_reply!r} after step {index} shares a token with the text before it"
            )
        positions.append(token)
    keep = len(positions)
    if max_length is not None:
        while keep and positions[keep - 1] >= max_length:
            keep -= 1
    cut = positions[keep - 1] + 1 if keep else min(len(input_ids), max_length or 0)
    step_starts = []
    if positions:
        first = _token_covering(offsets, starts[0]) if starts[0] < ends[0] else None
        step_starts = [positions[0] if first is None else first] + [p + 1 for p in positions[:-1]]
    return EncodedSteps(list(input_ids[:cut]), positions[:keep], len(ends) - keep, step_starts[:keep])


def _token_covering(offsets: list[tuple[int, int]], char: int) -> int | None:
    """Index of the token whose text covers character `char` (the last one when several do)."""
    found = None
    for index, (start, stop) in enumerate(offsets):
        if start <= char < stop:
            found = index
        elif start > char:
            break
    return found


def _tokens_overlapping(offsets: list[tuple[int, int]], start: int, end: int) -> list[int]:
    return [i for i, (s, e) in enumerate(offsets) if s < end and e > start]
