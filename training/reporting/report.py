"""The evaluation report: figures from result rows, ``report.json``, ``report.md`` and PNG plots.

Headline figures (Snell et al.): the efficiency ratio, the smallest budget at which weighted best-of-N
reaches its own accuracy at the cap over the smallest at which the compute-optimal policy (CV accuracy)
does; compute-optimal against weighted best-of-N at every budget; predicted-bin against oracle-bin
compute-optimal accuracy.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

from ponder.inference.difficulty import Binning
from ponder.inference.strategies import Strategy
from ponder.training.core.outputs import write_json_atomic, write_text_atomic
from ponder.training.reporting.flops_matched import compare as flops_matched_comparison
from ponder.training.reporting.flops_matched import verifier_cost

REFERENCE = "bon_weighted"
FLOPS_MATCHED_NOTE = "not run: set `large_policy` to a larger policy trained on the same data"


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def grouped(rows: list[dict], *keys: str) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[tuple(row[k] for k in keys)].append(row)
    return groups


def accuracy_table(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Accuracy per strategy and budget (budgets as strings, JSON keys)."""
    table: dict[str, dict[str, float]] = defaultdict(dict)
    for (strategy, budget), group in sorted(grouped(rows, "strategy", "budget").items()):
        table[strategy][str(budget)] = mean(r["correct"] for r in group)
    return dict(table)


def compute_table(rows: list[dict]) -> dict[str, dict[str, dict]]:
    """Mean compute per problem per strategy and budget: generations, tokens, verifier tokens, FLOPs."""
    table: dict[str, dict[str, dict]] = defaultdict(dict)
    for (strategy, budget), group in sorted(grouped(rows, "strategy", "budget").items()):
        flops = [r["flops"] for r in group]
        table[strategy][str(budget)] = {
            "generations": mean(r["generations"] for r in group),
            "generated_tokens": mean(r["generated_tokens"] for r in group),
            "verifier_tokens": mean(r["verifier_tokens"] for r in group),
            "flops": None if None in flops else mean(flops),
        }
    return dict(table)


def per_bin_accuracy(rows: list[dict], binning: Binning) -> dict[str, dict[str, dict[str, float]]]:
    """Accuracy per bin, strategy and budget."""
    return {label: accuracy_table([r for r in rows if binning.bins[r["id"]] == label]) for label in binning.labels}


def seq_par_table(rows: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """Revision accuracy per budget, strategy and level (plus ``"all"``): Snell et al.'s seq:par comparison.

    Only budgets that are powers of 4 from 16 up (every L : N/L ratio in factors of 4 fits there).
    """
    revisions = [r for r in rows if Strategy.parse(r["strategy"]).kind == "revision"]
    table: dict[str, dict[str, dict[str, float]]] = {}
    for (budget, strategy), group in sorted(grouped(revisions, "budget", "strategy").items()):
        if budget < 16 or budget & (budget - 1) or budget.bit_length() % 2 == 0:
            continue
        per_level = {
            str(level): mean(r["correct"] for r in g) for (level,), g in sorted(grouped(group, "level").items())
        }
        table.setdefault(str(budget), {})[strategy] = {**per_level, "all": mean(r["correct"] for r in group)}
    return table


def seq_par_markdown(table: dict) -> str:
    """One table per budget: rows are revision strategies as sequential:parallel ratios, columns levels."""
    if not table:
        return (
            "## Sequential vs parallel revisions\n\nnot run: name a `revision` checkpoint and revision_l<L> strategies"
        )
    sections = ["## Sequential vs parallel revisions (accuracy per level; L : N/L = sequential : parallel)"]
    for budget, strategies in table.items():
        columns = list(next(iter(strategies.values())))
        body = []
        for name, accuracy in sorted(
            strategies.items(), key=lambda item: (Strategy.parse(item[0]).selection, Strategy.parse(item[0]).length)
        ):
            strategy = Strategy.parse(name)
            ratio = f"{strategy.length}:{int(budget) // strategy.length}"
            body.append([f"{ratio} ({strategy.selection})"] + [fmt(accuracy.get(c)) for c in columns])
        sections += ["", f"N = {budget}", "", markdown_table(["L:N/L (selection)"] + columns, body)]
    return "\n".join(sections)


def cv_summary(cv: dict[int, dict], binning: Binning) -> dict:
    """CV accuracy per budget and per bin, and the strategy chosen per held-out fold and bin."""
    per_bin: dict[str, dict[str, float]] = {label: {} for label in binning.labels}
    choices: dict[str, dict[str, dict[str, str]]] = {}
    for budget, result in cv.items():
        for label in binning.labels:
            scored = [(c["accuracy"], len(c["scored_on"])) for c in result["choices"] if c["bin"] == label]
            if scored:
                per_bin[label][str(budget)] = sum(a * n for a, n in scored) / sum(n for _, n in scored)
        per_fold: dict[str, dict[str, str]] = defaultdict(dict)
        for c in result["choices"]:
            per_fold[f"fold{c['held_out_fold']}"][c["bin"]] = c["strategy"]
        choices[str(budget)] = dict(per_fold)
    return {
        "binning": binning.to_dict(),
        "bin_sizes": {label: sum(b == label for b in binning.bins.values()) for label in binning.labels},
        "cv_accuracy": {str(budget): result["accuracy"] for budget, result in cv.items()},
        "per_bin_cv_accuracy": per_bin,
        "chosen_per_held_out_fold": choices,
    }


def efficiency(cv_accuracy: dict[str, float], reference: dict[str, float], cap: int) -> dict:
    """How much less compute the compute-optimal policy needs for the reference strategy's accuracy at `cap`.

    The ratio is the smallest budget at which the reference itself reaches that accuracy over the
    smallest budget at which the CV accuracy does. A reference that is flat near the cap reaches its own
    figure early (best-of-8 at or above best-of-32 is common once sampling saturates), and the ratio
    then credits compute-optimal only with what it saves against that budget, not against the cap.
    The ratio is undefined (None) when the reference gains nothing from N = 1 to the cap: any strategy
    then "reaches" it at N = 1, and a ratio would only measure the sweep.
    """
    target = reference.get(str(cap))

    def first_reaching(accuracy: dict[str, float]) -> int | None:
        reached = [int(b) for b, acc in accuracy.items() if target is not None and acc >= target]
        return min(reached) if reached else None

    budget, reference_budget = first_reaching(cv_accuracy), first_reaching(reference)
    gains = target is not None and "1" in reference and target > reference["1"]
    return {
        "reference_accuracy_at_cap": target,
        "reference_budget_reaching_it": reference_budget,
        "budget_reaching_it": budget,
        "ratio": reference_budget / budget if budget and gains else None,
    }


def standard_error(accuracy: float | None, problems: int) -> float | None:
    """Binomial standard error of an accuracy over `problems` problems."""
    return None if accuracy is None else math.sqrt(accuracy * (1 - accuracy) / problems)


def build_report(
    config: dict,
    command: str,
    rows: list[dict],
    difficulty: list[dict],
    bins: dict[str, Binning],
    cv: dict[str, dict[int, dict]],
    other_rule: str,
    other_rule_cv: dict[str, dict[int, dict]],
    solver_rows: list[dict],
    skipped: dict[str, str],
    parameters: dict,
    timings: dict,
    large: dict | None = None,
    skipped_problems: dict | None = None,
) -> dict:
    """Every figure of the evaluation as one JSON-ready dict (with a markdown summary).

    `cv` is per binning with the configured choice rule; `other_rule_cv` per binning with
    `other_rule`, reported beside. `large` (optional): ``{small, large, greedy}`` pretraining
    records and greedy rows of a larger policy for the FLOPs-matched comparison, on the oracle bins.
    `skipped_problems`: the count and first examples of the bad problems ``skip_bad_rows`` left out.
    """
    cap = config["max_budget"]
    accuracy = accuracy_table(rows)
    compute_optimal = {name: cv_summary(result, bins[name]) for name, result in cv.items()}
    reference = accuracy.get(REFERENCE, {})
    cv_oracle = compute_optimal["oracle"]["cv_accuracy"]
    cv_predicted = compute_optimal["predicted"]["cv_accuracy"]
    compare = str(config["compare_budget"])
    report = {
        "command": command,
        "config": config,
        "problems": len({r["id"] for r in difficulty}),
        **(skipped_problems or {"skipped_problems": 0, "skipped_problem_examples": []}),
        "budgets": sorted({r["budget"] for r in rows}),
        "max_budget": cap,
        "parameters": parameters,
        "skipped_strategies": skipped,
        "efficiency_ratio": efficiency(cv_oracle, reference, cap)["ratio"],
        "efficiency": {
            "reference": f"{REFERENCE} at N={cap}",
            "reference_gain_over_n1": (
                reference[str(cap)] - reference["1"] if str(cap) in reference and "1" in reference else None
            ),
            "standard_error": standard_error(reference.get(str(cap)), len({r["id"] for r in difficulty})),
            "oracle_bins": efficiency(cv_oracle, reference, cap),
            "predicted_bins": efficiency(cv_predicted, reference, cap),
        },
        "choice_rule": config["choice_rule"],
        "compute_optimal_other_rule": {
            "rule": other_rule,
            **{
                name: {
                    "cv_accuracy": (accuracies := {str(b): r["accuracy"] for b, r in result.items()}),
                    "efficiency": efficiency(accuracies, reference, cap),
                }
                for name, result in other_rule_cv.items()
            },
        },
        "compute_optimal_minus_weighted_bon": {
            name: {b: round(acc - reference[b], 4) for b, acc in summary["cv_accuracy"].items() if b in reference}
            for name, summary in compute_optimal.items()
        },
        f"predicted_vs_oracle_at_{compare}": (
            cv_predicted[compare] / cv_oracle[compare] if cv_oracle.get(compare) else None
        ),
        "accuracy": accuracy,
        "seq_par": seq_par_table(rows),
        "compute": compute_table(rows),
        "compute_optimal": compute_optimal,
        "per_bin_accuracy": {"oracle": per_bin_accuracy(rows, bins["oracle"])},
        "difficulty": {
            "samples": config["difficulty_samples"],
            "probe_samples": config["probe_samples"],
            "mean_pass_at_1": mean(d["pass_at_1"] for d in difficulty),
            "mean_pass_at_1_per_oracle_bin": {
                label: mean(d["pass_at_1"] for d in difficulty if bins["oracle"].bins[d["id"]] == label)
                for label in bins["oracle"].labels
            },
            "oracle_and_predicted_bin_agree": mean(
                bins["oracle"].bins[d["id"]] == bins["predicted"].bins[d["id"]] for d in difficulty
            ),
        },
        "solver_check": solver_summary(solver_rows, accuracy, compute_optimal, config),
        "flops_matched": FLOPS_MATCHED_NOTE
        if large is None
        else flops_matched_comparison(
            large["small"],
            large["large"],
            large["greedy"],
            compute_optimal["oracle"]["per_bin_cv_accuracy"],
            cv_oracle,
            bins["oracle"].bins,
            sorted({r["budget"] for r in rows}),
            verifier_cost(
                None if config["prm"] == "oracle" else config["prm"],
                config["policy"],
                parameters.get("prm"),
                [r for r in rows if _scored_by_prm(r["strategy"])],
            ),
        ),
        "seconds": timings,
    }
    report["summary_markdown"] = summary_markdown(report)
    return report


def solver_summary(solver_rows: list[dict], accuracy: dict, compute_optimal: dict, config: dict) -> dict | None:
    """The solver's held-out accuracy with the probe charged, beside probe-free figures at that budget."""
    if not solver_rows:
        return None
    budget = str(config["solver_check_budget"])
    chosen: dict[str, int] = defaultdict(int)
    for row in solver_rows:
        chosen[row["strategy"].removeprefix("compute_optimal/") + f"@{row['run_budget']}"] += 1
    return {
        "budget": int(budget),
        "probe_samples": config["probe_samples"],
        "accuracy": mean(r["correct"] for r in solver_rows),
        "mean_generations": mean(r["generations"] for r in solver_rows),
        "runs_chosen": dict(sorted(chosen.items())),
        "predicted_bins_cv_accuracy_without_probe": compute_optimal["predicted"]["cv_accuracy"].get(budget),
        f"{REFERENCE}_accuracy": accuracy.get(REFERENCE, {}).get(budget),
    }


def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(header: list[str], body: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in body]
    return "\n".join(lines)


def accuracy_markdown(report: dict) -> str:
    """Strategies and compute-optimal (CV) rows × budgets."""
    budgets = [str(b) for b in report["budgets"]]
    body = [[s] + [acc.get(b) for b in budgets] for s, acc in report["accuracy"].items()]
    rule = report["choice_rule"]
    for name, summary in report["compute_optimal"].items():
        label = "one bin for all" if name == "single" else f"{name} bins, {rule}"
        body.append([f"**compute-optimal ({label}, CV)**"] + [summary["cv_accuracy"].get(b) for b in budgets])
    other = report["compute_optimal_other_rule"]
    for name, summary in other.items():
        if name != "rule":
            body.append(
                [f"compute-optimal ({name} bins, {other['rule']}, CV)"]
                + [summary["cv_accuracy"].get(b) for b in budgets]
            )
    return markdown_table(["strategy \\ budget N"] + budgets, body)


def summary_markdown(report: dict) -> str:
    """The headline figures and the accuracy table."""
    eff = report["efficiency"]
    other = report["compute_optimal_other_rule"]
    compare = next(k for k in report if k.startswith("predicted_vs_oracle_at_"))
    lines = [
        f"## Compute-optimal evaluation: {report['problems']} problems, budgets {report['budgets']}",
        "",
        f"Reference: {eff['reference']}, accuracy {fmt(eff['oracle_bins']['reference_accuracy_at_cap'])} "
        f"(standard error {fmt(eff['standard_error'])}; gain over N = 1: {fmt(eff['reference_gain_over_n1'])}). "
        "A ratio means little when that gain is within a few standard errors.",
    ]
    if report["skipped_problems"]:
        lines.append(f"- bad problems skipped (skip_bad_rows): {report['skipped_problems']}")
    gains = (eff["reference_gain_over_n1"] or 0) > 0
    for name in ("oracle", "predicted"):
        reached = eff[f"{name}_bins"]
        where = (
            "undefined: the reference gains nothing over N = 1"
            if not gains
            else f"reached at N = {reached['budget_reaching_it']}, the reference at N = "
            f"{reached['reference_budget_reaching_it']}"
            if reached["budget_reaching_it"]
            else "not reached within the budgets swept"
        )
        lines.append(
            f"- efficiency ratio ({name} bins, {report['choice_rule']} rule, CV): **{fmt(reached['ratio'], 2)}** "
            f"({where}; {other['rule']} rule: {fmt(other[name]['efficiency']['ratio'], 2)})"
        )
    lines.append(
        f"- predicted-bin / oracle-bin compute-optimal accuracy at N = {compare.rsplit('_', 1)[1]}: "
        f"{fmt(report[compare])}"
    )
    check = report["solver_check"]
    if check:
        lines.append(
            f"- solver (held-out fold, {check['probe_samples']}-sample probe charged) at N = {check['budget']}: "
            f"{fmt(check['accuracy'])} (predicted-bin CV without probe "
            f"{fmt(check['predicted_bins_cv_accuracy_without_probe'])}, "
            f"{REFERENCE} {fmt(check[f'{REFERENCE}_accuracy'])})"
        )
    lines += ["", accuracy_markdown(report)]
    return "\n".join(lines)


def report_markdown(report: dict, plots: list[str]) -> str:
    """The whole report: summary, compute per strategy, bins, choices, skipped parts, timings."""
    budgets = [str(b) for b in report["budgets"]]
    flops = [[s] + [c.get(b, {}).get("flops") for b in budgets] for s, c in report["compute"].items()]
    flops = [[row[0]] + [f"{v:.2e}" if v is not None else None for v in row[1:]] for row in flops]
    tokens = [
        [s] + [round(c[b]["generated_tokens"]) if b in c else None for b in budgets]
        for s, c in report["compute"].items()
    ]
    predicted = report["compute_optimal"]["predicted"]
    choices = [
        [b]
        + [
            predicted["chosen_per_held_out_fold"][b].get("fold0", {}).get(label)
            for label in predicted["binning"]["labels"]
        ]
        for b in budgets
    ]
    sections = [
        "# ponder evaluate report",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Model parameters: {report['parameters']}",
        "",
        report["summary_markdown"],
        "",
        "## Mean FLOPs per problem (≈ 2·parameters·tokens, policy and verifier, prompt prefill not counted)",
        "",
        markdown_table(["strategy \\ budget N"] + budgets, flops),
        "",
        "## Mean generated tokens per problem",
        "",
        markdown_table(["strategy \\ budget N"] + budgets, tokens),
        "",
        "## Difficulty bins",
        "",
        f"Oracle pass@1 from {report['difficulty']['samples']} samples; predicted = mean PRM score of "
        f"{report['difficulty']['probe_samples']} samples. Oracle and predicted quintile agree on "
        f"{fmt(report['difficulty']['oracle_and_predicted_bin_agree'])} of problems.",
        "",
        markdown_table(
            ["binning", "bin sizes", "thresholds"],
            [
                [name, json.dumps(s["bin_sizes"]), json.dumps([round(t, 3) for t in s["binning"]["thresholds"]])]
                for name, s in report["compute_optimal"].items()
            ],
        ),
        "",
        "Strategy chosen per predicted bin when fold 0 is held out (chosen on fold 1):",
        "",
        markdown_table(["N"] + predicted["binning"]["labels"], choices),
        "",
        flops_matched_markdown(report["flops_matched"]),
        "",
        seq_par_markdown(report["seq_par"]),
        "",
        f"Skipped strategies: {report['skipped_strategies'] or 'none'}",
        "",
        f"Seconds per part: {report['seconds']}",
        "",
    ]
    sections += [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(sections) + "\n"


def flops_matched_markdown(matched: dict | str) -> str:
    """The FLOPs-matched section: per R, the small policy's compute-optimal accuracy vs the large one's greedy."""
    if isinstance(matched, str):
        return f"FLOPs-matched comparison: {matched}."
    labels = [k for k in matched["large_greedy"] if k != "all"]
    params = matched["parameters"]
    greedy = matched["large_greedy"]
    body = [["large policy, greedy", "–", "–", greedy["all"]] + [greedy[b] for b in labels]]
    for result in matched["by_ratio"]:
        accuracy = result["small_compute_optimal"]
        budget = fmt(result["budget"]) + (" (cap)" if result["capped"] else "")
        body.append(
            [f"small + compute-optimal, R = {result['ratio']}", result["matched_generations"], budget, accuracy["all"]]
            + [accuracy[b] for b in labels]
        )
    return "\n".join(
        [
            "## FLOPs-matched comparison (Snell et al. Figure 1)",
            "",
            f"Large policy {params['large']:,} parameters ({matched['pretraining_tokens']['large']:,} pretraining "
            f"tokens) against this policy, {params['small']:,} parameters ({matched['pretraining_tokens']['small']:,} "
            "tokens), at equal pretraining + inference FLOPs; R = inference tokens / pretraining tokens. "
            f"{verifier_sentence(matched.get('verifier'))} Columns: "
            'generations per query the small policy may spend, the swept budget used ("cap": the sweep ends '
            "below the matched budget, which understates the small policy), accuracy overall and per oracle bin.",
            "",
            markdown_table(["", "matched generations", "budget N", "all"] + [f"bin {b}" for b in labels], body),
        ]
    )


def _scored_by_prm(name: str) -> bool:
    """Whether the PRM scores a strategy's candidates (not an ORM, not revision attempts)."""
    strategy = Strategy.parse(name)
    return strategy.verifier == "prm" and strategy.kind != "revision"


def verifier_sentence(verifier: dict | None) -> str:
    """How the verifier's FLOPs enter the match, in words."""
    if verifier is None:
        return "The verifier costs nothing here (the oracle)."
    pretraining = verifier["pretraining_flops"]
    pretrained = (
        "its pretraining is unknown and counted as 0"
        if pretraining is None
        else f"{pretraining:.3g} pretraining FLOPs of its own"
        if pretraining
        else "it shares the policy's pretraining"
    )
    return (
        f"The verifier counts on the small side: {verifier['parameters']:,} parameters reading "
        f"{verifier['tokens_per_generated_token']:.2f} tokens per generated token; {pretrained}."
    )


def plot_flops_matched(report: dict, path: Path) -> bool:
    """Bars per oracle bin: the large policy greedy and the small one at each R; False when not run."""
    import matplotlib.pyplot as plt

    matched = report["flops_matched"]
    if isinstance(matched, str):
        return False
    labels = [k for k in matched["large_greedy"] if k != "all"]
    series = [("large, greedy", [matched["large_greedy"][b] for b in labels])]
    series += [
        (f"small + compute-optimal, R={r['ratio']} (N={r['budget']})", [r["small_compute_optimal"][b] for b in labels])
        for r in matched["by_ratio"]
    ]
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(labels), 4))
    for i, (name, values) in enumerate(series):
        xs = [j + i * width for j in range(len(labels))]
        ax.bar(xs, [float("nan") if v is None else v for v in values], width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(labels))], [f"bin {b}" for b in labels])
    ax.set_ylabel("accuracy")
    ax.set_title("FLOPs-matched: larger policy vs test-time compute")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_accuracy(report: dict, path: Path) -> None:
    """Accuracy vs budget (log2 x) per strategy, compute-optimal curves on top."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for strategy, acc in report["accuracy"].items():
        budgets = sorted(int(b) for b in acc)
        ax.plot(budgets, [acc[str(b)] for b in budgets], marker="o", lw=1, alpha=0.8, label=strategy)
    for name in ("oracle", "predicted"):
        cv = report["compute_optimal"][name]["cv_accuracy"]
        budgets = sorted(int(b) for b in cv)
        ax.plot(budgets, [cv[str(b)] for b in budgets], "k-" if name == "oracle" else "k--", lw=2.5,
                label=f"compute-optimal ({name} bins, CV)")  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xlabel("generation budget N")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_per_bin(report: dict, path: Path) -> None:
    """One panel per oracle bin: accuracy vs budget per strategy and the bin's compute-optimal CV accuracy."""
    import matplotlib.pyplot as plt

    per_bin = report["per_bin_accuracy"]["oracle"]
    cv_per_bin = report["compute_optimal"]["oracle"]["per_bin_cv_accuracy"]
    fig, axes = plt.subplots(1, len(per_bin), figsize=(3.2 * len(per_bin), 3.4), sharey=True, squeeze=False)
    for ax, (label, table) in zip(axes[0], per_bin.items()):
        for strategy, acc in table.items():
            budgets = sorted(int(b) for b in acc)
            ax.plot(budgets, [acc[str(b)] for b in budgets], marker=".", lw=1, alpha=0.8, label=strategy)
        budgets = sorted(int(b) for b in cv_per_bin[label])
        ax.plot(budgets, [cv_per_bin[label][str(b)] for b in budgets], "k-", lw=2.5, label="compute-optimal (CV)")
        ax.set_xscale("log", base=2)
        ax.set_title(f"oracle bin {label}")
        ax.set_xlabel("N")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy")
    axes[0][-1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_revision_heatmap(report: dict, path: Path) -> bool:
    """Accuracy of hierarchical revision runs by budget and chain length L (ratio L : N/L); False if none ran."""
    import matplotlib.pyplot as plt

    strategies = {name: Strategy.parse(name) for name in report["accuracy"]}
    runs = {
        s.length: report["accuracy"][name]
        for name, s in strategies.items()
        if s.kind == "revision" and s.selection == "hierarchical"
    }
    if not runs:
        return False
    lengths = sorted(runs)
    budgets = report["budgets"]
    grid = [[runs[length].get(str(b), float("nan")) for b in budgets] for length in lengths]
    fig, ax = plt.subplots(figsize=(1 + 0.8 * len(budgets), 1 + 0.6 * len(lengths)))
    image = ax.imshow(grid, aspect="auto", origin="lower", cmap="viridis")
    ax.set_xticks(range(len(budgets)), [str(b) for b in budgets])
    ax.set_yticks(range(len(lengths)), [f"L={length}" for length in lengths])
    ax.set_xlabel("budget N (N/L parallel chains of L sequential revisions)")
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            if value == value:
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="w", fontsize=7)
    fig.colorbar(image, ax=ax, label="accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(output_dir: Path, report: dict) -> None:
    """``report.json``, the PNG plots and ``report.md`` in `output_dir`."""
    import matplotlib

    matplotlib.use("Agg")
    plots = [output_dir / "accuracy_vs_budget.png", output_dir / "accuracy_per_bin.png"]
    plot_accuracy(report, plots[0])
    plot_per_bin(report, plots[1])
    heatmap = output_dir / "revision_heatmap.png"
    if plot_revision_heatmap(report, heatmap):
        plots.append(heatmap)
    flops_plot = output_dir / "flops_matched.png"
    if plot_flops_matched(report, flops_plot):
        plots.append(flops_plot)
    report["plots"] = [p.name for p in plots]
    write_json_atomic(output_dir / "report.json", report)
    write_text_atomic(output_dir / "report.md", report_markdown(report, [str(p) for p in plots]))
