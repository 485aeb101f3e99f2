"""Text generation behind one small interface, with generated tokens counted on every call.

A generator has a `tokenizer` and `generate(prompts, params) -> [[Completion] * params.n]`.

`HFGenerator` samples from a transformers causal LM: prompts are batched with left padding, each
distinct prompt is encoded once and its KV cache repeated for its `n` samples, finished sequences
leave the batch, and every sequence stops at EOS, at any of the caller's stop strings, or at the
model's last position (``max_position_embeddings``).
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
from transformers.generation.stopping_criteria import StopStringCriteria

from ponder.inference.engine import EngineConfig, build_vllm_engine, default_device
from ponder.inference.model_io import cache_argument, returned_cache


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
        self._eos: torch.Tensor | None = None
        self._stop_criteria: dict[tuple[str, ...], StopStringCriteria] = {}

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
        generator = torch.Generator(device=self.device)
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

    def _eos_ids(self) -> torch.Tensor:
        """Every token that ends a sequence: the tokenizer's EOS and the generation config's (Llama 3 has several)."""
        if self._eos is None:
            configured = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
            ids = {self.tokenizer.eos_token_id}
            ids.update(configured if isinstance(configured, list) else [configured])
            self._eos = torch.tensor(sorted(i for i in ids if i is not None), device=self.device)
        return self._eos

    def _stop_strings(self, stop: tuple[str, ...]) -> StopStringCriteria | None:
        """transformers' matcher of stop strings that end a token sequence, across token boundaries."""
        if stop and stop not in self._stop_criteria:
            self._stop_criteria[stop] = StopStringCriteria(self.tokenizer, list(stop))
        return self._stop_criteria.get(stop)

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
        cache = preallocate(returned_cache(out), extra_positions=params.max_new_tokens)
        cache.batch_select_indices(rows_of_prompt)
        logits, attention = out.logits[rows_of_prompt, -1, :], attention[rows_of_prompt]
        next_position = attention.sum(-1)
        eos_ids, stop_strings = self._eos_ids(), self._stop_strings(tuple(params.stop))
        # The last tokens of each live row, for the stop-string matcher; the filler is out of vocabulary.
        recent = torch.full((logits.shape[0], stop_strings.maximum_token_len if stop_strings else 1), 2**31 - 1)
        recent = recent.to(device)
        alive = torch.arange(logits.shape[0], device=device)  # original row of each live sequence
        tokens: list[list[int]] = [[] for _ in range(logits.shape[0])]
        reasons = ["length"] * logits.shape[0]
        last_position = getattr(self.model.config, "max_position_embeddings", None)
        for _ in range(params.max_new_tokens):
            chosen = _sample(logits, params.temperature, params.top_p, generator)
            for row, token in zip(alive.tolist(), chosen.tolist()):
                tokens[row].append(token)
            is_eos = torch.isin(chosen, eos_ids)
            ended = is_eos
            if stop_strings is not None:
                recent = torch.cat([recent[:, 1:], chosen[:, None]], dim=-1)
                ended = ended | stop_strings(recent, None)
            for row, eos in zip(alive[ended].tolist(), is_eos[ended].tolist()):
                reasons[row] = "eos" if eos else "stop"
            # a row whose token took the model's last position ends there, by "length", as vLLM's do
            finished = ended | (next_position >= last_position - 1) if last_position else ended
            if finished.all():
                break
            if finished.any():
                keep = (~finished).nonzero().squeeze(-1)
                cache.batch_select_indices(keep)
                alive, chosen, attention, next_position, recent = (
                    alive[keep],
                    chosen[keep],
                    attention[keep],
                    next_position[keep],
                    recent[keep],
                )
            attention = torch.cat([attention, attention.new_ones((attention.shape[0], 1))], dim=-1)
            out = self.model(
                input_ids=chosen[:, None],
                attention_mask=attention,
                position_ids=next_position[:, None],
                use_cache=True,
                **cache_argument(self.model, cache),
            )
            cache, logits = returned_cache(out), out.logits[:, -1, :]
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
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class VLLMGenerator:
    """vLLM behind the same interface (see module docstring)."""

    def __init__(self, model_path: str, engine: EngineConfig | None = None, seed: int = 0, device: str | None = None):
        self.engine = engine or EngineConfig()
        self.llm = build_vllm_engine(model_path, self.engine, seed=seed, device=device)
        self.tokenizer = self.llm.get_tokenizer()
        self.stats = GenerationStats()
        self._calls_seeded = 0

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        """`params.n` completions per prompt, in prompt order.

        Identical prompts go to vLLM as one request of ``n × copies`` samples, whose samples differ;
        separate requests for them would, under one seed, repeat each other. With
        ``sampling_seeds="engine"`` requests draw from the engine's one seeded generator (vLLM's fast
        batched sampler); with ``"request"`` each distinct prompt gets its own seed derived from
        `params.seed`, its index and the call count: reproducible per call, sampled row by row.
        """
        from vllm import SamplingParams as VLLMSamplingParams

        distinct = list(dict.fromkeys(prompts))
        copies = Counter(prompts)
        encoded = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in distinct]
        greedy = params.temperature == 0  # vLLM takes n = 1 only: one greedy completion serves every copy
        requests, settings = [], []
        for index, (prompt, ids) in enumerate(zip(distinct, encoded)):
            requests.append({"prompt_token_ids": ids})
            settings.append(
                VLLMSamplingParams(
                    n=1 if greedy else copies[prompt] * params.n,
                    temperature=params.temperature,
                    top_p=params.top_p,
                    max_tokens=params.max_new_tokens,
                    stop=list(params.stop) or None,
                    include_stop_str_in_output=True,
                    skip_special_tokens=False,  # the text as the HF backend decodes it
                    seed=self._request_seed(params.seed, index),
                )
            )
        self._calls_seeded += 1
        outputs = self.llm.generate(requests, settings, use_tqdm=False)
        by_prompt = {p: [vllm_completion(o) for o in out.outputs] for p, out in zip(distinct, outputs)}
        if greedy:
            by_prompt = {p: by_prompt[p] * (copies[p] * params.n) for p in distinct}
        taken = Counter()
        results = []
        for p in prompts:
            results.append(by_prompt[p][taken[p] : taken[p] + params.n])
            taken[p] += params.n
        self.stats.calls += 1
        self.stats.sequences += sum(map(len, results))
        self.stats.generated_tokens += sum(c.num_tokens for r in results for c in r)
        self.stats.prompt_tokens += sum(len(ids) * copies[p] for p, ids in zip(distinct, encoded))
        return results

    def _request_seed(self, seed: int | None, index: int) -> int | None:
        if self.engine.sampling_seeds == "engine" or seed is None:
            return None
        return (seed * 1_000_003 + self._calls_seeded * 65_537 + index) % 2**63


def vllm_completion(output) -> Completion:
    """A vLLM `CompletionOutput` as a `Completion`: a stop string ends with "stop", EOS with "eos"."""
    stopped = "stop" if isinstance(output.stop_reason, str) else "eos"
    reason = "length" if output.finish_reason == "length" else stopped
    return Completion(text=output.text, num_tokens=len(output.token_ids), finish_reason=reason)


def make_generator(
    model_path: str, engine: EngineConfig | None = None, device: str | None = None, seed: int = 0
) -> Generator:
    """A generator for a checkpoint folder, on `device` (this process's own), as `engine` says."""
    engine = engine or EngineConfig()
    if engine.uses_vllm():
        return VLLMGenerator(model_path, engine, seed=seed, device=device)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_path, **engine.hf_kwargs())
    return HFGenerator(model.to(default_device(device)), AutoTokenizer.from_pretrained(model_path))
