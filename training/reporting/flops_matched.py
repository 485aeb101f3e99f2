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

A trained verifier is part of the small side's cost (`verifier_cost`): its pretraining P_V when it did
not start from the small policy (a PRM initialised from a larger model brings that model's
pretraining), and 2·N_V FLOPs per token it reads, v tokens per generated token as measured in the sweep:

    k = (6·N_large·D_large + 2·N_large·R·D_large − 6·N_small·D_small − P_V) / (2·(N_small + N_V·v)·R·D_large)

A k below 1 leaves the small side no budget at all. Fine-tuning FLOPs are not counted.
"""

from __future__ import annotations

import json
from pathlib import Path

from ponder.inference.verifiers import METADATA_FILE

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


def verifier_cost(verifier_path: str | None, policy: str, parameters: int | None, rows: list[dict]) -> dict | None:
    """The verifier's share of the small side's FLOPs, or None when it costs nothing (the oracle).

    ``{parameters, pretraining_flops, tokens_per_generated_token}``: pretraining is 0 when the
    verifier is the policy or was trained from it, else that of the base model named in its
    ``ponder.json`` (None when that is not a toy policy with an ``eval.json``); tokens read per
    generated token are summed over `rows` (the sweep's rows scored by this verifier).
    """
    if verifier_path is None or parameters is None:
        return None
    metadata_path = Path(verifier_path) / METADATA_FILE
    metadata = json.loads(metadata_path.read_text()) if metadata_path.exists() else {}
    base = metadata.get("base_model", verifier_path)
    pretraining = 0
    if Path(base).resolve() != Path(policy).resolve():
        try:
            record = pretraining_record(base)
            pretraining = 6 * record["parameters"] * record["tokens"]
        except ValueError:
            pretraining = None  # unknown (a third-party verifier): counted as 0 and reported as unknown
    generated = sum(r["generated_tokens"] for r in rows)
    return {
        "parameters": parameters,
        "pretraining_flops": pretraining,
        "tokens_per_generated_token": sum(r["verifier_tokens"] for r in rows) / generated if generated else 0.0,
    }


def matched_generations(small: dict, large: dict, ratio: float, verifier: dict | None = None) -> float:
    """Generations per query the small policy (with its `verifier`) may spend to match the large one's
    greedy total FLOPs (module docstring)."""
    n_small, d_small = small["parameters"], small["tokens"]
    n_large, d_large = large["parameters"], large["tokens"]
    inference = ratio * d_large
    spent = 6 * n_small * d_small
    per_token = n_small
    if verifier is not None:
        spent += verifier["pretraining_flops"] or 0
        per_token += verifier["parameters"] * verifier["tokens_per_generated_token"]
    return (6 * n_large * d_large + 2 * n_large * inference - spent) / (2 * per_token * inference)


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
    small: dict,
    large: dict,
    greedy: list[dict],
    per_bin_cv: dict,
    cv: dict,
    bins: dict,
    budgets: list[int],
    verifier: dict | None = None,
) -> dict:
    """Per R: the matched generations, the budget used, and per-bin and overall accuracy of both sides.

    `per_bin_cv` / `cv` are the small policy's compute-optimal CV accuracy per (oracle) bin and budget
    and overall; `bins` maps problem id to its oracle bin; `verifier` is `verifier_cost`'s record.
    """
    labels = list(per_bin_cv)
    greedy_per_bin = {label: _mean([r["correct"] for r in greedy if bins[r["id"]] == label]) for label in labels}
    results = []
    for ratio in RATIOS:
        k = matched_generations(small, large, ratio, verifier)
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
        "verifier": verifier,
        "pretraining_tokens": {"small": small["tokens"], "large": large["tokens"]},
        "large_greedy": {"all": _mean([r["correct"] for r in greedy]), **greedy_per_bin},
        "large_greedy_mean_tokens": _mean([r["generated_tokens"] for r in greedy]),
        "by_ratio": results,
    }


def _mean(values: list) -> float | None:
    return sum(values) / len(values) if values else None
