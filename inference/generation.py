"""Text generation behind one small interface, with generated tokens counted on every call.

A generator has a `tokenizer` and `generate(prompts, params) -> [[Completion] * params.n]`.

`HFGenerator` samples from a transformers causal LM: prompts are batched with left padding, each
distinct prompt is encoded once and its KV cache repeated for its `n` samples, finished sequences
leave the batch, and every sequence stops at EOS or at any of the caller's stop strings.
`VLLMGenerator` is a thin layer over vLLM's `LLM.generate` with prefix caching, used when vLLM is
installed and a GPU exists (`make_generator` picks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


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
        """`params.n` completions for each prompt, in prompt order."""
        encoded = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        generator = torch.Generator(device="cpu")
        generator.manual_seed(params.seed if params.seed is not None else torch.seed())
        results: list[list[Completion]] = [[] for _ in prompts]
        for batch in self._plan_batches(encoded, params):
            completions = self._sample_batch([encoded[i] for i in batch], params, generator)
            for i, sample in zip(batch, completions):
                results[i] = sample
        self.stats.calls += 1
        self.stats.prompt_tokens += sum(map(len, encoded))
        return results

    def _plan_batches(self, encoded: list[list[int]], params: SamplingParams) -> list[list[int]]:
        """Group prompts of similar length so that each batch fits the sequence and token caps."""
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        per_prompt = params.n
        batches, current, longest = [], [], 0
        for i in order:
            longest_if_added = max(longest, len(encoded[i]))
            sequences = (len(current) + 1) * per_prompt
            tokens = sequences * (longest_if_added + params.max_new_tokens)
            if current and (sequences > self.max_batch_sequences or tokens > self.max_batch_tokens):
                batches.append(current)
                current, longest_if_added = [], len(encoded[i])
            current.append(i)
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
    def _sample_batch(self, prompts: list[list[int]], params: SamplingParams, generator) -> list[list[Completion]]:
        device, pad_id = self.device, self.tokenizer.pad_token_id
        width = max(map(len, prompts))
        input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention[row, width - len(ids) :] = 1
        input_ids, attention = input_ids.to(device), attention.to(device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=True)
        cache, logits = out.past_key_values, out.logits[:, -1, :]
        if params.n > 1:  # encode each prompt once, then share its KV cache among its samples
            cache.batch_repeat_interleave(params.n)
            logits = logits.repeat_interleave(params.n, dim=0)
            attention = attention.repeat_interleave(params.n, dim=0)
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
        return [completions[i * params.n : (i + 1) * params.n] for i in range(len(prompts))]

    def _completion(self, tokens: list[int], reason: str, stop: tuple[str, ...]) -> Completion:
        if reason == "eos":
            text = self.tokenizer.decode(tokens[:-1])
        else:
            text = self.tokenizer.decode(tokens)
            if reason == "stop":  # cut after the first stop string; the token may carry more text
                cut = min((text.find(s) + len(s) for s in stop if s in text), default=len(text))
                text = text[:cut]
        return Completion(text=text, num_tokens=len(tokens), finish_reason=reason)


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
