"""What every search shares: its setup, candidates, step-wise expansion, scoring and result rows."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from ponder.inference.generation import Completion, SamplingParams, chat_prompt
from ponder.inference.verifiers import aggregate


@dataclass
class SearchSetup:
    """The parts a search runs on: a generator, a verifier, a task, and how to sample.

    `max_step_tokens` caps one step in step-wise searches (a longer step ends its candidate without
    an answer); `max_solution_tokens` caps a whole sampled solution in best-of-N.
    """

    generator: object
    verifier: object
    task: object
    temperature: float = 0.8
    top_p: float = 1.0
    max_step_tokens: int = 64
    max_solution_tokens: int = 512
    aggregation: str = "last"
    seed: int = 0

    def sampling(self, n: int, purpose: str, step: bool, temperature: float | None = None) -> SamplingParams:
        """Sampling parameters for one generator call; the seed is derived from the setup's and `purpose`."""
        return SamplingParams(
            n=n,
            temperature=self.temperature if temperature is None else temperature,
            top_p=self.top_p,
            max_new_tokens=self.max_step_tokens if step else self.max_solution_tokens,
            stop=(self.task.step_delimiter,) if step else (),
            seed=zlib.crc32(f"{self.seed}:{purpose}".encode()),
        )


@dataclass
class Candidate:
    """A partial or finished solution of problem `problem` (an index into the searched problems)."""

    problem: int
    steps: list[str]
    finished: bool = False
    answer: str | None = None
    score: float = 0.0
    generated_tokens: int = 0  # spent on this candidate's latest generation
    verifier_tokens: int = 0  # spent on its latest scoring


@dataclass
class Ledger:
    """Compute spent per problem: generated tokens, verifier tokens and verifier calls (sequences scored)."""

    generated_tokens: list[int]
    verifier_tokens: list[int]
    verifier_calls: list[int]

    @classmethod
    def empty(cls, problems: int) -> Ledger:
        return cls([0] * problems, [0] * problems, [0] * problems)


@dataclass
class Searched:
    """Problems under search with their question texts and chat prompts."""

    rows: list[dict]
    setup: SearchSetup
    questions: list[str] = field(init=False)
    prompts: list[str] = field(init=False)
    ledger: Ledger = field(init=False)

    def __post_init__(self):
        task, tokenizer = self.setup.task, self.setup.generator.tokenizer
        self.questions = [task.make_prompt(row) for row in self.rows]
        self.prompts = [chat_prompt(tokenizer, q) for q in self.questions]
        self.ledger = Ledger.empty(len(self.rows))

    def prefix(self, candidate: Candidate) -> str:
        """The text a step-wise generator continues: the chat prompt and the steps so far."""
        delimiter = self.setup.task.step_delimiter
        return self.prompts[candidate.problem] + "".join(step + delimiter for step in candidate.steps)

    def expand(self, candidates: list[Candidate], params: SamplingParams) -> list[list[Candidate]]:
        """`params.n` one-step continuations of every candidate, all in one batched generator call."""
        outputs = self.setup.generator.generate([self.prefix(c) for c in candidates], params)
        return [[self._extend(c, completion) for completion in outs] for c, outs in zip(candidates, outputs)]

    def _extend(self, candidate: Candidate, completion: Completion) -> Candidate:
        """The candidate one step longer. EOS finishes it; a step that hits the token cap ends it
        without an answer; an empty step (a bare delimiter) is kept, so verifiers see it."""
        self.ledger.generated_tokens[candidate.problem] += completion.num_tokens
        task, text = self.setup.task, completion.text
        if completion.finish_reason == "stop":
            text = text.removesuffix(task.step_delimiter)
        steps = candidate.steps + ([text] if text or completion.finish_reason == "stop" else [])
        answer = task.extract_answer(task.join_steps(steps)) if completion.finish_reason == "eos" else None
        finished = completion.finish_reason != "stop"
        return Candidate(candidate.problem, steps, finished, answer, generated_tokens=completion.num_tokens)

    def score(self, candidates: list[Candidate], scored_steps: list[list[str]] | None = None) -> None:
        """Set each candidate's aggregated verifier score, in one batched verifier call.

        `scored_steps` replaces the steps that are shown to the verifier (lookahead scores rollouts).
        """
        steps = scored_steps if scored_steps is not None else [c.steps for c in candidates]
        outputs = self.setup.verifier.score([self.questions[c.problem] for c in candidates], steps)
        for candidate, output in zip(candidates, outputs):
            candidate.score = aggregate(output.step_scores, self.setup.aggregation)
            candidate.verifier_tokens = output.num_tokens
            self.ledger.verifier_tokens[candidate.problem] += output.num_tokens
            self.ledger.verifier_calls[candidate.problem] += 1

    def result_row(self, problem: int, strategy: str, budget: int, answer: str | None, **spent) -> dict:
        """One result row in the format every search returns; `correct` is None for a problem without gold."""
        row = self.rows[problem]
        correct = (
            None if "answer" not in row else answer is not None and self.setup.task.check_answer(answer, row["answer"])
        )
        result = {"id": row["id"], "strategy": strategy, "budget": budget, "answer": answer, "correct": correct}
        if "level" in row:
            result["level"] = row["level"]
        spent.setdefault("generated_tokens", self.ledger.generated_tokens[problem])
        spent.setdefault("verifier_tokens", self.ledger.verifier_tokens[problem])
        spent.setdefault("verifier_calls", self.ledger.verifier_calls[problem])
        return result | spent
