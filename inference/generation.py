"""Text generation behind one small interface, with generated tokens counted on every call.

A generator has a `tokenizer` and `generate(prompts, params) -> [[Completion] * params.n]`.

`HFGenerator` samples from a transformers causal LM: prompts are batched with left padding, each
distinct prompt is encoded once and its KV cache repeated for its `n` samples, finished sequences
leave the batch, and every sequence stops at EOS or at any of the caller's stop strings.
`VLLMGenerator` is a thin layer over vLLM's `LLM.generate` with prefix caching, used when vLLM is
installed and a GPU exists (`make_generator` picks).
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

import torch
from transformers.cache_utils import DynamicLayer


@dataclass
class SamplingParams:
    """How to sample: `n` completions per prompt; temperature 0 means greedy."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass
class Completion:
    """One sampled continuation: its text (stop string included), token count and why it ended."""

    text: str
    num_tokens: int
    finish_reason: str  # "eos", "stop" or "length"


@dataclass
class GenerationStats:
    """Running totals over a generator's lifetime."""

    calls: int = 0
    sequences: int = 0
    generated_tokens: int = 0
    prompt_tokens: int = 0


class Generator(Protocol):
    """What searches and evaluations need from a generation backend."""

    tokenizer: object
    stats: GenerationStats

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]: ...


def chat_prompt(tokenizer, user_text: str) -> str:
    """The model's chat-formatted prompt for one user turn, ready for the assistant's answer."""
    messages = [{"role": "user", "content": user_text}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


class HFGenerator:
    """Batched sampling from a transformers causal LM (see module docstring)."""

    def __init__(self, model, tokenizer, max_batch_tokens: int = 65536, max_batch_sequences: int = 512):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_sequences = max_batch_sequences
        self.stats = GenerationStats()
        self._stop_ids_cache: dict[tuple[str, ...], torch.Tensor] = {}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        """`params.n` completions for each prompt, in prompt order.

        Identical prompts (a search often continues the same prefix several times) are encoded once
        and their KV cache is shared by all of their samples.
        """
        distinct = list(dict.fromkeys(prompts))
        encoded = self.tokenizer(distinct, add_special_tokens=False)["input_ids"] if distinct else []
        copies = Counter(prompts)
        samples = [copies[p] * params.n for p in distinct]
        generator = torch.Generator(device="cpu")
        generator.manual_seed(params.seed if params.seed is not None else torch.seed())
        by_prompt: list[list[Completion]] = [[] for _ in distinct]
        for batch in self._plan_batches(encoded, samples, params.max_new_tokens):
            completions = self._sample_batch(
                [encoded[i] for i in batch], [samples[i] for i in batch], params, generator
            )
            for i, sample in zip(batch, completions):
                by_prompt[i] = sample
        index = {p: i for i, p in enumerate(distinct)}
        taken = [0] * len(distinct)
        results = []
        for p in prompts:
            i = index[p]
            results.append(by_prompt[i][taken[i] : taken[i] + params.n])
            taken[i] += params.n
        self.stats.calls += 1
        self.stats.prompt_tokens += sum(map(len, encoded))
        return results

    def _plan_batches(self, encoded: list[list[int]], samples: list[int], max_new_tokens: int) -> list[list[int]]:
        """Group prompts of similar length so that each batch fits the sequence and token caps."""
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        batches, current, sequences, longest = [], [], 0, 0
        for i in order:
            longest_if_added = max(longest, len(encoded[i]))
            tokens = (sequences + samples[i]) * (longest_if_added + max_new_tokens)
            too_many = sequences + samples[i] > self.max_batch_sequences or tokens > self.max_batch_tokens
            if current and too_many:
                batches.append(current)
                current, sequences, longest_if_added = [], 0, len(encoded[i])
            current.append(i)
            sequences += samples[i]
            longest = longest_if_added
        if current:
            batches.append(current)
        return batches

    def _stop_token_ids(self, stop: tuple[str, ...]) -> torch.Tensor:
        """EOS plus every vocabulary token whose text contains a stop string."""
        if stop not in self._stop_ids_cache:
            ids = {self.tokenizer.eos_token_id}
            if stop:
                for token_id in range(len(self.tokenizer)):
                    text = self.tokenizer.decode([token_id])
                    if any(s in text for s in stop):
                        ids.add(token_id)
            self._stop_ids_cache[stop] = torch.tensor(sorted(ids), device=self.device)
        return self._stop_ids_cache[stop]

    @torch.no_grad()
    def _sample_batch(
        self, prompts: list[list[int]], samples: list[int], params: SamplingParams, generator
    ) -> list[list[Completion]]:
        device, pad_id = self.device, self.tokenizer.pad_token_id
        width = max(map(len, prompts))
        input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention[row, width - len(ids) :] = 1
        input_ids, attention = input_ids.to(device), attention.to(device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        out = self.model(
            input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=True, logits_to_keep=1
        )
        # Encode each prompt once, then give each of its samples a row that shares its KV cache.
        rows_of_prompt = torch.repeat_interleave(torch.arange(len(prompts)), torch.tensor(samples)).to(device)
        cache = preallocate(out.past_key_values, extra_positions=params.max_new_tokens)
        cache.batch_select_indices(rows_of_prompt)
        logits, attention = out.logits[rows_of_prompt, -1, :], attention[rows_of_prompt]
        next_position = attention.sum(-1)
        stop_ids = self._stop_token_ids(tuple(params.stop))
        alive = torch.arange(logits.shape[0], device=device)  # original row of each live sequence
        tokens: list[list[int]] = [[] for _ in range(logits.shape[0])]
        reasons = ["length"] * logits.shape[0]
        for _ in range(params.max_new_tokens):
            chosen = _sample(logits, params.temperature, params.top_p, generator)
            for row, token in zip(alive.tolist(), chosen.tolist()):
                tokens[row].append(token)
            finished = torch.isin(chosen, stop_ids)
            for row, token in zip(alive[finished].tolist(), chosen[finished].tolist()):
                reasons[row] = "eos" if token == self.tokenizer.eos_token_id else "stop"
            if finished.all():
                break
            if finished.any():
                keep = (~finished).nonzero().squeeze(-1)
                cache.batch_select_indices(keep)
                alive, chosen, attention, next_position = (
                    alive[keep],
                    chosen[keep],
                    attention[keep],
                    next_position[keep],
                )
            attention = torch.cat([attention, attention.new_ones((attention.shape[0], 1))], dim=-1)
            out = self.model(
                input_ids=chosen[:, None],
                attention_mask=attention,
                position_ids=next_position[:, None],
                past_key_values=cache,
                use_cache=True,
            )
            cache, logits = out.past_key_values, out.logits[:, -1, :]
            next_position = next_position + 1
        completions = [self._completion(t, r, params.stop) for t, r in zip(tokens, reasons)]
        self.stats.sequences += len(completions)
        self.stats.generated_tokens += sum(c.num_tokens for c in completions)
        bounds = [0, *itertools.accumulate(samples)]
        return [completions[start:end] for start, end in itertools.pairwise(bounds)]

    def _completion(self, tokens: list[int], reason: str, stop: tuple[str, ...]) -> Completion:
        if reason == "eos":
            text = self.tokenizer.decode(tokens[:-1])
        else:
            text = self.tokenizer.decode(tokens)
            if reason == "stop":  # cut after the first stop string; the token may carry more text
                cut = min((text.find(s) + len(s) for s in stop if s in text), default=len(text))
                text = text[:cut]
        return Completion(text=text, num_tokens=len(tokens), finish_reason=reason)


class PreallocatedLayer(DynamicLayer):
    """A KV-cache layer with room reserved for the tokens still to come.

    transformers' `DynamicLayer` concatenates every new position onto the whole cache, copying it at
    each decoding step; here each step writes one position in place and the attention reads a view.
    """

    def __init__(self, layer: DynamicLayer, extra_positions: int):
        super().__init__()
        batch, heads, length, _ = layer.keys.shape
        self.dtype, self.device = layer.keys.dtype, layer.keys.device
        self._keys = layer.keys.new_empty((batch, heads, length + extra_positions, layer.keys.shape[-1]))
        self._values = layer.values.new_empty((batch, heads, length + extra_positions, layer.values.shape[-1]))
        self._keys[:, :, :length], self._values[:, :, :length] = layer.keys, layer.values
        self.length = length
        self.is_initialized = True
        self._refresh()

    def _refresh(self) -> None:
        self.keys, self.values = self._keys[:, :, : self.length], self._values[:, :, : self.length]

    def update(self, key_states, value_states, *args, **kwargs):
        new = key_states.shape[-2]
        if self.length + new > self._keys.shape[-2]:
            raise RuntimeError("preallocated KV cache is full")
        self._keys[:, :, self.length : self.length + new] = key_states
        self._values[:, :, self.length : self.length + new] = value_states
        self.length += new
        self._refresh()
        return self.keys, self.values

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._keys, self._values = self._keys.repeat_interleave(repeats, 0), self._values.repeat_interleave(repeats, 0)
        self._refresh()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._keys, self._values = self._keys[indices], self._values[indices]
        self._refresh()


def preallocate(cache, extra_positions: int):
    """Swap a prefilled cache's dynamic layers for `PreallocatedLayer`s (other layer kinds stay)."""
    cache.layers = [
        PreallocatedLayer(layer, extra_positions) if type(layer) is DynamicLayer else layer for layer in cache.layers
    ]
    return cache


def _sample(logits: torch.Tensor, temperature: float, top_p: float, generator) -> torch.Tensor:
    """Next token per row: greedy at temperature 0, else nucleus sampling."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs > top_p
        sorted_probs[outside] = 0.0
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(logits.device)


class VLLMGenerator:
    """vLLM behind the same interface: prompts go in as token ids (the chat template already holds
    BOS), stop strings stay in the text like the HF backend, prefix caching shares prompt KV."""

    def __init__(self, model_path: str, seed: int = 0, **llm_kwargs):
        from vllm import LLM

        self.llm = LLM(model=str(model_path), enable_prefix_caching=True, seed=seed, **llm_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.stats = GenerationStats()

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        from vllm import SamplingParams as VLLMSamplingParams

        sampling = VLLMSamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_new_tokens,
            stop=list(params.stop) or None,
            include_stop_str_in_output=True,
            seed=params.seed,
        )
        encoded = [{"prompt_token_ids": self.tokenizer(p, add_special_tokens=False)["input_ids"]} for p in prompts]
        outputs = self.llm.generate(encoded, sampling, use_tqdm=False)
        results = [[vllm_completion(o) for o in out.outputs] for out in outputs]
        self.stats.calls += 1
        self.stats.sequences += sum(map(len, results))
        self.stats.generated_tokens += sum(c.num_tokens for r in results for c in r)
        self.stats.prompt_tokens += sum(len(e["prompt_token_ids"]) for e in encoded)
        return results


def vllm_completion(output) -> Completion:
    """A vLLM `CompletionOutput` as a `Completion`: a stop string ends with "stop", EOS with "eos"."""
    stopped = "stop" if isinstance(output.stop_reason, str) else "eos"
    reason = "length" if output.finish_reason == "length" else stopped
    return Completion(text=output.text, num_tokens=len(output.token_ids), finish_reason=reason)


def vllm_available() -> bool:
    """True when vLLM is installed and a CUDA GPU is visible."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


def make_generator(model_path: str, backend: str = "auto", device: str | None = None, **kwargs) -> Generator:
    """A generator for a checkpoint folder: ``"vllm"``, ``"hf"``, or ``"auto"`` (vLLM when available)."""
    if backend not in ("auto", "hf", "vllm"):
        raise ValueError(f"unknown generation backend {backend!r}; use 'auto', 'hf' or 'vllm'")
    if backend == "vllm" or (backend == "auto" and vllm_available()):
        return VLLMGenerator(model_path, **kwargs)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_path)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return HFGenerator(model.to(device), AutoTokenizer.from_pretrained(model_path), **kwargs)
