"""Monte-Carlo rollout values for the steps of a policy's own solutions (Math-Shepherd, OmegaPRM).

A step's value is the fraction of `k` rollouts from the prefix ending at that step that reach the
gold answer; its hard label is "any rollout succeeded" (threshold 0, as in Qwen's "Lessons" paper).
The last step of a sample needs no rollouts: its value is whether the sample itself is right.

- ``per_step`` rolls out from every prefix (k · (steps − 1) rollouts per sample).
- ``outcome`` rolls out nothing: every step takes the sample's own outcome, since the rest of the sample
  is one rollout from each of its prefixes (one-rollout estimates, as outcome-supervised value models
  train on: Yu et al. 2024). For the rollouts another mode spends, it labels many more samples.
- ``binary_search`` locates the first step whose value is 0 on wrong samples by bisection
  (O(k log M) rollouts; OmegaPRM), and labels right samples positive without rollouts, as well as
  the steps a wrong sample shares with a right sample of its problem. Its labels are
  hard (1.0 before the located step, 0.0 from it on); `rollouts` shows where evidence was gathered.
  A probe only asks "does any of k rollouts succeed?", so its rollouts go out in stages of 1, 1, 2,
  4, … (summing to k) and stop at the first success: the same hard label as k rollouts at once, for
  fewer rollouts on live prefixes.

All rollouts of a round, over every prefix of every sample of every problem in the batch, go to the
generator in one call.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from ponder.inference.generation import SamplingParams, chat_prompt

MODES = ("per_step", "outcome", "binary_search")


@dataclass
class Sample:
    """One sampled solution of a problem and what is learned about its steps."""

    problem: dict
    prompt: str
    index: int
    steps: list[str]
    correct: bool
    values: list[float | None] = field(default_factory=list)
    rollouts: list[int] = field(default_factory=list)
    successes: dict[int, str] = field(default_factory=dict)  # step index -> a successful rollout from there

    def __post_init__(self):
        self.values = [None] * len(self.steps)
        self.rollouts = [0] * len(self.steps)
        if self.steps:
            self.values[-1] = 1.0 if self.correct else 0.0


@dataclass
class RolloutCounter:
    rollouts: int = 0
    generated_tokens: int = 0


class RolloutLabeller:
    """Samples solutions and estimates step values with a generator (see module docstring)."""

    def __init__(
        self,
        generator,
        task,
        rollouts: int,
        temperature: float,
        top_p: float,
        max_new_tokens: int,
        rollout_temperature: float | None = None,
    ):
        self.generator = generator
        self.task = task
        self.k = rollouts
        self.temperature = temperature
        self.rollout_temperature = temperature if rollout_temperature is None else rollout_temperature
        self.top_p = top_p
        self.max_new_tokens = max_new_tokens
        self.counter = RolloutCounter()

    def _params(self, n: int, seed: int, temperature: float) -> SamplingParams:
        return SamplingParams(
            n=n, temperature=temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens, seed=seed
        )

    def sample(self, problems: list[dict], n: int, seed: int) -> list[list[Sample]]:
        """`n` solutions per problem, split into steps and graded."""
        questions = [self.task.make_prompt(p) for p in problems]
        prompts = [chat_prompt(self.generator.tokenizer, q) for q in questions]
        outputs = self.generator.generate(prompts, self._params(n, seed, self.temperature))
        self.counter.generated_tokens += sum(c.num_tokens for outs in outputs for c in outs)
        samples = []
        for problem, question, outs in zip(problems, questions, outputs):
            samples.append([])
            for j, c in enumerate(outs):
                correct = c.finish_reason == "eos" and self.task.grade(c.text, problem["answer"])
                samples[-1].append(Sample(problem, question, j, self.task.split_steps(c.text), correct))
        return samples

    def estimate(
        self,
        targets: list[tuple[Sample, int]],
        seed: int,
        stop_at_success: bool = False,
        known: dict[str, tuple[float, int, str | None]] | None = None,
    ) -> None:
        """Roll out `k` completions from each (sample, step index) prefix and record the value.

        Samples of one problem often share their first steps: each distinct prefix is rolled out
        once and its value given to every sample that has it. With `stop_at_success`, rollouts go out
        in stages (`success_stages`) and a prefix stops at its first success; its value is then the
        success fraction of the rollouts it used. `known` maps prefixes rolled out before (by an
        earlier call) to (value, rollouts, first successful rollout or None): they are not rolled out
        again, and new ones are added. A sample keeps its prefixes' first successful rollouts in
        `successes`.
        """
        delimiter = self.task.step_delimiter
        chats: dict[str, str] = {}  # the chat template is rendered once per question
        by_prompt: dict[str, tuple[str, list[tuple[Sample, int]]]] = {}
        for sample, i in targets:
            if sample.prompt not in chats:
                chats[sample.prompt] = chat_prompt(self.generator.tokenizer, sample.prompt)
            prefix = self.task.join_steps(sample.steps[: i + 1]) + delimiter
            by_prompt.setdefault(chats[sample.prompt] + prefix, (prefix, []))[1].append((sample, i))
        known = {} if known is None else known
        pending = [prompt for prompt in by_prompt if prompt not in known]
        successes = dict.fromkeys(pending, 0)
        used = dict.fromkeys(pending, 0)
        first_success: dict[str, str] = {}
        for stage, n in enumerate(success_stages(self.k) if stop_at_success else [self.k]):
            if not pending:
                break
            outputs = self.generator.generate(
                pending, self._params(n, derive_seed(seed, stage), self.rollout_temperature)
            )
            for prompt, outs in zip(pending, outputs):
                prefix, sharing = by_prompt[prompt]
                gold = sharing[0][0].problem["answer"]
                for c in outs:
                    if c.finish_reason == "eos" and self.task.grade(prefix + c.text, gold):
                        successes[prompt] += 1
                        first_success.setdefault(prompt, c.text)
                used[prompt] += len(outs)
                self.counter.rollouts += len(outs)
                self.counter.generated_tokens += sum(c.num_tokens for c in outs)
            pending = [prompt for prompt in pending if not (stop_at_success and successes[prompt])]
        for prompt in successes:
            known[prompt] = (successes[prompt] / used[prompt], used[prompt], first_success.get(prompt))
        for prompt, (_, sharing) in by_prompt.items():
            value, rollouts, success = known[prompt]
            for sample, j in sharing:
                sample.values[j], sample.rollouts[j] = value, rollouts
                if success is not None:
                    sample.successes[j] = success

    def per_step(self, samples: list[Sample], seed: int) -> None:
        self.estimate([(s, i) for s in samples for i in range(len(s.steps) - 1)], seed)

    def outcome(self, samples: list[Sample]) -> None:
        """Every step's value is its sample's outcome; one rollout is counted per step before the last."""
        for s in samples:
            s.values = [float(s.correct)] * len(s.steps)
            s.rollouts[:-1] = [1] * (len(s.steps) - 1)

    def binary_search(self, samples: list[Sample], seed: int) -> None:
        """Bisect each wrong sample for its first zero-valued step; right samples are positive throughout.

        A right sample is itself a successful rollout of each of its prefixes, so a wrong sample's
        steps shared with a right sample of the same problem are positive without rollouts and the
        bisection starts after them. Likewise a successful rollout from step i that writes the
        sample's own next steps i+1..j is a successful rollout of those longer prefixes too: the
        bisection moves past j, and its next probe is step j+1, where the rollout left the sample's
        path (the likely first error), instead of the midpoint. So the first probe is the first
        unknown step: when it is alive it is cheap (its rollouts stop at the first success), and its
        successful rollout often writes the sample's steps up to the error; at worst it costs one
        probe more than plain bisection.
        """
        right_prefixes = {
            (s.problem["id"], tuple(s.steps[: i + 1])) for s in samples if s.correct for i in range(len(s.steps))
        }
        bounds = {}
        for s in samples:
            if s.steps and not s.correct:
                start = 0
                while start < len(s.steps) - 1 and (s.problem["id"], tuple(s.steps[: start + 1])) in right_prefixes:
                    start += 1
                bounds[id(s)] = [start, len(s.steps) - 1]
        wrong = [s for s in samples if id(s) in bounds]
        known: dict[str, tuple[float, int, str | None]] = {}  # a prefix probed for one sample serves the others
        suspects = {id(s): bounds[id(s)][0] for s in wrong}  # sample -> next probe, if not the midpoint
        round_index = 0
        while True:
            open_ = [s for s in wrong if bounds[id(s)][0] < bounds[id(s)][1]]
            if not open_:
                break
            mids = [(s, suspects.pop(id(s), sum(bounds[id(s)]) // 2)) for s in open_]
            self.estimate(mids, derive_seed(seed, "round", round_index), stop_at_success=True, known=known)
            for s, mid in mids:
                if s.values[mid] > 0:
                    followed = self.steps_followed(s, mid)
                    bounds[id(s)][0] = min(mid + 1 + followed, bounds[id(s)][1])
                    if followed and bounds[id(s)][0] < bounds[id(s)][1]:
                        suspects[id(s)] = bounds[id(s)][0]
                else:
                    bounds[id(s)][1] = mid
            round_index += 1
        for s in samples:
            first_zero = bounds[id(s)][0] if id(s) in bounds else len(s.steps)
            s.values = [1.0 if i < first_zero else 0.0 for i in range(len(s.steps))]

    def steps_followed(self, sample: Sample, index: int) -> int:
        """How many of `sample`'s steps after `index` its successful rollout from `index` writes verbatim."""
        written = self.task.split_steps(sample.successes[index])
        following = sample.steps[index + 1 :]
        count = 0
        while count < min(len(written), len(following)) and written[count] == following[count]:
            count += 1
        return count


def derive_seed(*parts) -> int:
    """A sampling seed for one generation call, distinct for distinct `parts` (e.g. seed, round, stage)."""
    return zlib.crc32(repr(parts).encode())


def success_stages(k: int) -> list[int]:
    """Stage sizes 1, 1, 2, 4, … that sum to `k` (the last one takes the remainder)."""
    stages: list[int] = []
    while sum(stages) < k:
        stages.append(min(max(1, sum(stages)), k - sum(stages)))
    return stages


def stepwise_row(sample: Sample, after_first_zero: str) -> dict | None:
    """The stepwise-format row of a labelled sample (docs/design.md, *Data formats*), or None without steps.

    `after_first_zero` is ``"keep"`` (every step with its value) or ``"drop"`` (cut after the first
    step whose value is 0: what follows a dead prefix says little).
    """
    if not sample.steps:
        return None
    values = [float(v) for v in sample.values]
    end = len(values)
    if after_first_zero == "drop" and 0.0 in values:
        end = values.index(0.0) + 1
    problem = sample.problem
    row = {
        "id": f"{problem['id']}-s{sample.index}",
        "problem_id": problem["id"],
        "prompt": sample.prompt,
        "completions": sample.steps[:end],
        "labels": values[:end],
        "hard": [v > 0 for v in values[:end]],
        "rollouts": sample.rollouts[:end],
        "answer_correct": sample.correct,
    }
    if "level" in problem:
        row["level"] = problem["level"]
    return row
