"""Verifiers: score many (question, steps) pairs in batches and return a score per step.

Kinds, named by the ``kind`` field of a checkpoint's ``ponder.json``:

- ``prm_token_classification``: `AutoModelForTokenClassification`, score read at each step's last
  token (one logit → sigmoid, two → softmax of class 1), or with ``read="step_min"`` the lowest
  token score of the solution so far (a PRM trained to flag the token where a solution goes wrong);
- ``prm_causal_lm``: a causal LM that predicts a positive or negative token at a step tag
  (Math-Shepherd's ``ки`` with ``+``/``-``) or before the reply of the ``chat_turns`` layout (RLHFlow),
  score = P(positive) / (P(positive) + P(negative));
- ``orm``: `AutoModelForSequenceClassification`, one score for the whole solution;
- ``policy_likelihood``: no training, a baseline every trained PRM must beat: the policy (any causal
  LM) scores a step by the lowest probability it gave a token of the solution so far.

`OracleVerifier` wraps a task's oracle step checker: a perfect PRM for the toy world, so search can
be tested and measured before any PRM is trained. Every verifier counts the sequences and tokens it
scores. Third-party PRMs (Math-Shepherd, Qwen2.5-Math-PRM, Skywork-o1-Open-PRM, RLHFlow) load by naming
their layout, one of `PRM_FORMATS`.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from ponder.inference.engine import EngineConfig, build_vllm_engine, default_device
from ponder.inference.model_io import cache_argument
from ponder.inference.prm_formats import PRM_FORMATS, released_head
from ponder.inference.shared_prefix import charged_tokens, prefix_groups, shared_prefix_features
from ponder.inference.step_format import StepFormat, encode_many, step_spans

METADATA_FILE = "ponder.json"
AGGREGATIONS = ("last", "min", "prod", "mean")
VERIFIER_KINDS = ("prm_token_classification", "prm_causal_lm", "orm", "policy_likelihood")
READS = ("step_end", "step_min")


def aggregate(step_scores: list[float], how: str) -> float:
    """One score for a solution from its step scores (`last`, `min`, `prod` or `mean`)."""
    if how not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {how!r}; use one of {AGGREGATIONS}")
    if not step_scores:
        return 0.0
    if how == "last":
        return step_scores[-1]
    if how == "min":
        return min(step_scores)
    if how == "prod":
        return math.prod(step_scores)
    return sum(step_scores) / len(step_scores)


@dataclass
class Scored:
    """A verifier's output for one solution: scores per step (one for an ORM) and the tokens charged
    for it (its own, plus an even share of a prefix it shares with others; see `HFVerifier.score`)."""

    step_scores: list[float]
    num_tokens: int


@dataclass
class VerifierStats:
    """Running totals over a verifier's lifetime."""

    calls: int = 0
    sequences: int = 0
    tokens: int = 0


@dataclass
class OracleVerifier:
    """A perfect PRM for a task with an oracle: 1 for each step before the first wrong one, then 0."""

    task: object
    aggregation: str = "last"
    stats: VerifierStats = field(default_factory=VerifierStats)

    def score(self, questions: list[str], steps: list[list[str]]) -> list[Scored]:
        results = []
        for question, solution in zip(questions, steps):
            wrong = self.task.first_wrong_step({"problem": question}, self.task.join_steps(solution))
            cut = len(solution) if wrong is None else wrong
            results.append(Scored([1.0] * cut + [0.0] * (len(solution) - cut), 0))
        self.stats.calls += 1
        self.stats.sequences += len(results)
        return results


class HFVerifier:
    """A trained verifier checkpoint (any of `VERIFIER_KINDS`), scored in length-sorted batches."""

    def __init__(
        self,
        model,
        tokenizer,
        kind: str,
        step_format: StepFormat,
        aggregation: str = "last",
        positive_token: str | None = None,
        negative_token: str | None = None,
        max_length: int | None = None,
        max_batch_tokens: int = 65536,
        read: str = "step_end",
        attempts_in_context: int = 0,
    ):
        if kind not in VERIFIER_KINDS:
            raise ValueError(f"unknown verifier kind {kind!r}; use one of {VERIFIER_KINDS}")
        if read not in READS or (read == "step_min" and kind != "prm_token_classification"):
            raise ValueError(f"read must be one of {READS}; 'step_min' is for prm_token_classification, got {read!r}")
        reads_somewhere = step_format.step_tag is not None or step_format.turn_reply is not None
        if kind == "prm_causal_lm" and not (reads_somewhere and positive_token and negative_token):
            raise ValueError(
                "a prm_causal_lm verifier needs step_tag (or the chat_turns layout), positive_token and negative_token"
            )
        aggregate([], aggregation)  # validates the name
        self.model = None if model is None else model.eval()
        self.tokenizer = tokenizer
        self.kind = kind
        self.step_format = step_format
        self.aggregation = aggregation
        self.max_length = max_length
        self.max_batch_tokens = max_batch_tokens
        self.read = read
        self.attempts_in_context = attempts_in_context  # a revision ORM's earlier attempts (revision.verifier_question)
        self.shares_prefixes = model is not None and kind != "orm" and is_causal(model)
        self.stats = VerifierStats()
        if kind == "prm_causal_lm":
            self.label_ids = [label_token_id(tokenizer, t) for t in (negative_token, positive_token)]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def score(self, questions: list[str], steps: list[list[str]]) -> list[Scored]:
        """Scores for every pair, in length-sorted, dynamically padded batches.

        A causal model runs each prefix that several pairs share (a beam's steps, a prompt) once
        (`shared_prefix`); each pair is charged its own tokens and a share of its prefix's.
        """
        encoded = encode_many(self.tokenizer, self.step_format, questions, steps, self.max_length)
        features, charged = self._features_of([e.input_ids for e in encoded], encoded)
        results = [Scored(self._step_scores(f, e), n) for f, e, n in zip(features, encoded, charged)]
        self.stats.calls += 1
        self.stats.sequences += len(encoded)
        self.stats.tokens += sum(charged)
        return results

    def _features_of(self, sequences: list[list[int]], encoded) -> tuple[list[torch.Tensor], list[int]]:
        """Per-position features of every sequence (see `_features`) and the tokens charged to each."""
        if self.shares_prefixes:
            groups = prefix_groups(sequences, [e.step_starts for e in encoded])
            features = shared_prefix_features(
                self.model, sequences, groups, self._outputs, self._features, self._pad_id, self.max_batch_tokens
            )
            return features, charged_tokens(sequences, groups)
        features = [None] * len(sequences)
        for batch in _length_batches(list(map(len, sequences)), self.max_batch_tokens):
            for i, feature in zip(batch, self._run_whole([sequences[i] for i in batch])):
                features[i] = feature
        return features, list(map(len, sequences))

    @property
    def _pad_id(self) -> int:
        return self.tokenizer.pad_token_id or 0  # masked out: any id does for tokenizers without one (Llama 3)

    @property
    def _reads_lm_head(self) -> bool:
        return self.kind in ("policy_likelihood", "prm_causal_lm")

    def _outputs(self, input_ids, attention_mask, position_ids=None, cache=None) -> torch.Tensor:
        """Per-position outputs of one batched forward: the final hidden states of a causal LM (its
        vocabulary-sized logits are formed a block of positions at a time in `_features`), else the
        head's float logits."""
        device = self.device
        inputs = {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}
        if position_ids is not None:
            inputs["position_ids"] = position_ids.to(device)
        model = self.model.get_decoder() if self._reads_lm_head else self.model
        if cache is not None:
            inputs.update(use_cache=True, **cache_argument(model, cache))
        out = model(**inputs)
        return out.last_hidden_state if self._reads_lm_head else out.logits.float()

    @torch.no_grad()
    def _run_whole(self, batch: list[list[int]]) -> list[torch.Tensor]:
        """Features of right-padded whole sequences (an ORM's: its pooled logits)."""
        width = max(map(len, batch))
        input_ids = torch.full((len(batch), width), self._pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention[row, : len(ids)] = 1
        outputs = self._outputs(input_ids, attention)
        if self.kind == "orm":
            return list(outputs.cpu())
        return [self._features(outputs[row, : len(ids)], ids, 0) for row, ids in enumerate(batch)]

    def _features(self, outputs: torch.Tensor, ids: list[int], first: int) -> torch.Tensor:
        """What scoring needs per position, from the outputs at positions `first`, `first + 1`, ... of `ids`:
        the log-probability of the next token (policy likelihood, 0 at the last position), the
        label tokens' logits (causal-LM PRM), or the head's logits (token classification)."""
        if self.kind == "policy_likelihood":
            following = torch.tensor(ids[first + 1 : first + 1 + len(outputs)], dtype=torch.long, device=outputs.device)
            logprobs = torch.zeros(len(outputs), device=outputs.device)
            logprobs[: len(following)] = next_token_logprobs(self.model, outputs[: len(following)], following)
            return logprobs[:, None].cpu()
        if self.kind == "prm_causal_lm":
            return lm_head_logits(self.model, outputs, rows=self.label_ids).cpu()
        return outputs.cpu()

    def _step_scores(self, features: torch.Tensor, encoded) -> list[float]:
        """Per-step scores of one pair from its per-position features (see `_features`)."""
        if self.kind == "orm":
            return [positive_probability(features).item()]
        if self.kind == "policy_likelihood":
            logprobs = features[:, 0]
            return running_min(
                [
                    math.exp(logprobs[max(span.start - 1, 0) : span.stop - 1].min().item())
                    for span in step_spans(encoded)
                ]
            )
        if self.read == "step_min":
            probabilities = positive_probability(features)
            return running_min([probabilities[span.start : span.stop].min().item() for span in step_spans(encoded)])
        return positive_probability(features[encoded.step_positions]).tolist()


class VLLMVerifier(HFVerifier):
    """A token-classification PRM scored by vLLM's pooling runner: one engine on this process's GPUs.

    `llm.encode(..., pooling_task="token_classify")` returns the head's logits at every token (no
    activation), read exactly as `HFVerifier` reads transformers' logits.
    """

    def __init__(self, path: str, engine: EngineConfig, step_format: StepFormat, device: str | None = None, **settings):
        self.llm = build_vllm_engine(path, engine, device=device, runner="pooling")
        super().__init__(None, self.llm.get_tokenizer(), "prm_token_classification", step_format, **settings)

    def _features_of(self, sequences: list[list[int]], encoded) -> tuple[list[torch.Tensor], list[int]]:
        from vllm import PoolingParams

        outputs = self.llm.encode(
            [{"prompt_token_ids": ids} for ids in sequences],
            PoolingParams(use_activation=False),
            pooling_task="token_classify",
            use_tqdm=False,
        )
        features = [torch.as_tensor(out.outputs.data).float().reshape(len(i), -1) for out, i in zip(outputs, sequences)]
        return features, list(map(len, sequences))


def positive_probability(logits: torch.Tensor) -> torch.Tensor:
    """P(positive) from [..., 1] logits (sigmoid) or [..., 2] [negative, positive] logits (softmax)."""
    if logits.shape[-1] == 1:
        return torch.sigmoid(logits[..., 0])
    if logits.shape[-1] != 2:
        raise ValueError(f"a verifier head must give 1 or 2 logits, got {logits.shape[-1]}")
    return torch.softmax(logits, -1)[..., 1]


def is_causal(model) -> bool:
    """Whether every attention module of `model` is causal, so that a prefix's KV cache serves its extensions."""
    flags = [module.is_causal for module in model.modules() if isinstance(getattr(module, "is_causal", None), bool)]
    return bool(flags) and all(flags)


def running_min(values: list[float]) -> list[float]:
    """Each value replaced by the lowest so far: a step's score covers the solution up to it."""
    return list(itertools.accumulate(values, min))


def label_token_id(tokenizer, text: str) -> int:
    """The one token that `text` encodes to, as a causal-LM PRM's label: the same id in training and scoring.

    Encoding the text (not looking the string up as a vocabulary entry) gives the token the model
    emits for it, e.g. SentencePiece's ``▁+`` for ``"+"``.
    """
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"label token {text!r} is {len(ids)} tokens, not one")
    return ids[0]


SCORING_KEYS = ("aggregation", "positive_token", "negative_token", "max_length", "read", "attempts_in_context")
POSITIONS_PER_BLOCK = 2**24  # vocabulary logits formed at once: positions × vocabulary ≤ this (64 MiB of float32)


def lm_head_logits(model, hidden: torch.Tensor, rows: list[int] | None = None) -> torch.Tensor:
    """Float logits of a causal LM's head for hidden states ``[..., H]``, over the vocabulary or only `rows`.

    Applies the head's bias, Cohere's ``logit_scale`` and Gemma's final soft-capping, as the model's forward does.
    """
    head = model.get_output_embeddings()
    weight = head.weight if rows is None else head.weight[rows]
    bias = None if head.bias is None else (head.bias if rows is None else head.bias[rows])
    logits = torch.nn.functional.linear(hidden.to(weight.dtype), weight, bias).float()
    scale = getattr(model.config, "logit_scale", None)
    if scale is not None:
        logits = logits * scale
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return logits


def next_token_logprobs(model, hidden: torch.Tensor, following: torch.Tensor) -> torch.Tensor:
    """log P(following[t] | ...) from the hidden states ``[T, H]``, a block of positions at a time, so
    that no more than `POSITIONS_PER_BLOCK` vocabulary logits exist at once."""
    block = max(1, POSITIONS_PER_BLOCK // model.get_output_embeddings().weight.shape[0])
    pieces = []
    for start in range(0, len(hidden), block):
        logits = lm_head_logits(model, hidden[start : start + block])
        chosen = logits.gather(-1, following[start : start + block, None])[:, 0]
        pieces.append(chosen - torch.logsumexp(logits, -1))
    return torch.cat(pieces) if pieces else hidden.new_zeros(0, dtype=torch.float)


def _length_batches(lengths: list[int], max_batch_tokens: int) -> list[list[int]]:
    """Indices grouped by similar length so that a batch's padded size stays under the token cap."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batches, current = [], []
    for i in order:
        if current and (len(current) + 1) * lengths[i] > max_batch_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def load_verifier(
    path: str | Path,
    device: str | None = None,
    format: str | None = None,
    engine: EngineConfig | None = None,
    **overrides,
) -> HFVerifier:
    """Load a verifier checkpoint on `device`; its ``ponder.json`` says how it scores.

    With a vLLM `engine`, token-classification PRMs score through vLLM's pooling runner
    (`VLLMVerifier`), unless their layout says vLLM cannot load them (``vllm_pooling: false``); the other
    kinds load with transformers on `device`.

    A checkpoint without one (a third-party PRM) loads by naming its layout, ``format=`` one of
    `PRM_FORMATS` (e.g. ``"math-shepherd"``), whose fields replace ``ponder.json``'s; `overrides` replace
    single fields (e.g. ``aggregation="min"``, or a whole layout: ``kind="prm_causal_lm", step_tag=" ки",
    positive_token="+", negative_token="-"``). A checkpoint that lacks weights of the model its kind
    loads (say, a head of another shape or name) is an error, never a randomly initialised head.
    """
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
    )

    if format is not None and format not in PRM_FORMATS:
        raise ValueError(f"unknown PRM format {format!r}; use one of {sorted(PRM_FORMATS)}")
    metadata_path = Path(path) / METADATA_FILE
    metadata = json.loads(metadata_path.read_text()) if metadata_path.exists() else {}
    metadata.update(PRM_FORMATS.get(format, {}))
    metadata.update(overrides)
    if "kind" not in metadata:
        raise ValueError(
            f"{metadata_path}: no 'kind'; pass format= one of {sorted(PRM_FORMATS)} or kind= one of {VERIFIER_KINDS}"
        )
    kind = metadata["kind"]
    engine = engine or EngineConfig()
    step_format = StepFormat(**{f.name: metadata[f.name] for f in fields(StepFormat) if f.name in metadata})
    settings = {key: metadata[key] for key in SCORING_KEYS if key in metadata}
    if engine.uses_vllm() and kind == "prm_token_classification" and metadata.get("vllm_pooling", True):
        return VLLMVerifier(str(path), engine, step_format, device=device, **settings)
    loaders = {
        "prm_token_classification": AutoModelForTokenClassification,
        "prm_causal_lm": AutoModelForCausalLM,
        "orm": AutoModelForSequenceClassification,
        "policy_likelihood": AutoModelForCausalLM,
    }
    if kind not in loaders:
        raise ValueError(f"{metadata_path}: unknown kind {kind!r}; use one of {VERIFIER_KINDS}")
    model, loading = loaders[kind].from_pretrained(path, output_loading_info=True, **engine.hf_kwargs())
    missing = sorted(loading["missing_keys"])
    head = released_head(path) if kind == "prm_token_classification" else None
    if head is not None and set(missing) <= {"score.weight", "score.bias"}:
        model.score, missing = head.to(model.dtype), []
    if missing:
        raise ValueError(f"{path}: no weights for {missing[:4]}{' ...' if len(missing) > 4 else ''} of a {kind} model")
    model = model.to(default_device(device))
    tokenizer = AutoTokenizer.from_pretrained(path)
    return HFVerifier(model, tokenizer, kind, step_format, **settings)
