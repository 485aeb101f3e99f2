"""FLOPs-matched comparison (Snell et al. 2024, Figure 1): a larger policy answering greedily against
the evaluated policy with compute-optimal test-time compute, at equal total FLOPs.

Total FLOPs = pretraining (≈ 6·parameters·pretraining tokens) + inference (≈ 2·parameters·inference
tokens). With R = D_inference / D_pretrain (inference tokens over the large model's pretraining
tokens), the large model answering greedily (one generation per query) costs as much as the small one
spending `k` generations per query:

    6·N_large·D_large + 2·N_large·R·D_large = 6·N_small·D_small + 2·N_small·k·R·D_large
    k = (6·N_large·D_large + 2·N_large·R·D_large − 6·N_small·D_small) / (2·N_small·R·D_large)

(with equal parameters ratio M and equal data, k = M + 3·(M − 1)/R: Snell's R = 0.16, 0.79 and 22
give k ≈ 256, 64 and 16 for M = 14). The small model's side is its compute-optimal CV accuracy at the
largest swept budget ≤ k; a `k` beyond the sweep's cap is marked, which understates the small model.
"""

from __future__ import annotations

import json
from pathlib import Path

RATIOS = (0.16, 0.79, 22.0)


def pretraining_record(policy: str) -> dict:
    """Parameters and pretraining tokens of a toy policy checkpoint, from the ``eval.json`` its stage wrote."""
    path = Path(policy) / "eval.json"
    if not path.exists():
        raise ValueError(f"{path}: missing; the FLOPs-matched comparison needs policies trained by `ponder policy`")
    training = json.loads(path.read_text()).get("training", {})
    if not training.get("parameters") or not training.get("tokens_seen_with_padding"):
        raise ValueError(f"{path}: no training.parameters / training.tokens_seen_with_padding")
    return {"parameters": training["parameters"], "tokens": training["tokens_seen_with_padding"]}


def matched_generations(small: dict, large: dict, ratio: float) -> float:
    """Generations per query the small policy may spend to match the large one's greedy total FLOPs."""
    n_small, d_small = small["parameters"], small["tokens"]
    n_large, d_large = large["parameters"], large["tokens"]
    inference = ratio * d_large
    return (6 * n_large * d_large + 2 * n_large * inference - 6 * n_small * d_small) / (2 * n_small * inference)


def greedy_rows(problems: list[dict], generator, task, max_new_tokens: int) -> list[dict]:
    """One greedy solution per problem from `generator`, graded: ``{id, correct, generated_tokens}``."""
    from ponder.inference.generation import SamplingParams, chat_prompt

    prompts = [chat_prompt(generator.tokenizer, task.make_prompt(p)) for p in problems]
    outputs = generator.generate(prompts, SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens))
    rows = []
    for problem, (completion,) in zip(problems, outputs):
        correct = completion.finish_reason == "eos" and task.grade(completion.text, problem["answer"])
        rows.append({"id": problem["id"], "correct": correct, "generated_tokens": completion.num_tokens})
    return rows


def compare(
    small: dict, large: dict, greedy: list[dict], per_bin_cv: dict, cv: dict, bins: dict, budgets: list[int]
) -> dict:
    """Per R: the matched generations, the budget used, and per-bin and overall accuracy of both sides.

    `per_bin_cv` / `cv` are the small policy's compute-optimal CV accuracy per (oracle) bin and budget
    and overall; `bins` maps problem id to its oracle bin.
    """
    labels = list(per_bin_cv)
    greedy_per_bin = {label: _mean([r["correct"] for r in greedy if bins[r["id"]] == label]) for label in labels}
    results = []
    for ratio in RATIOS:
        k = matched_generations(small, large, ratio)
        usable = [b for b in budgets if b <= k * (1 + 1e-9)]  # k = 1 exactly may come out as 0.999...
        budget = max(usable) if usable else None
        results.append(
            {
                "ratio": ratio,
                "matched_generations": round(k, 1),
                "budget": budget,
                "capped": budget is not None and k >= 2 * budget and budget == max(budgets),
                "small_compute_optimal": {
                    "all": cv.get(str(budget)),
                    **{label: per_bin_cv[label].get(str(budget)) for label in labels},
                },
            }
        )
    return {
        "parameters": {"small": small["parameters"], "large": large["parameters"]},
        "pretraining_tokens": {"small": small["tokens"], "large": large["tokens"]},
        "large_greedy": {"all": _mean([r["correct"] for r in greedy]), **greedy_per_bin},
        "large_greedy_mean_tokens": _mean([r["generated_tokens"] for r in greedy]),
        "by_ratio": results,
    }


def _mean(values: list) -> float | None:
    return sum(values) / len(values) if values else None
