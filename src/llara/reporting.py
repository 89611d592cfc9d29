"""Tables and plots: how results look in the terminal (rich), in Markdown files and as PNG.

Every command and experiment prints through here: `llara evaluate` (`metrics_table`), the demo
(`demo_table`, `demo_markdown`, `results_plot`), `llara compare` (`comparison_table`), `llara explain`
(`explanation_table`, `explanation_comparison_table`) and `llara ablate` (`ablation_arms_table`,
`ablation_seeds_table`, `ablation_markdown`). Nothing here computes a result.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table

from llara.data.io import atomic_write

if TYPE_CHECKING:
    from llara.inference.explain import Comparison, Explanation


# ------------------------------------------------------------------------------ metrics (evaluate, demo)
def metrics_table(title: str, rows: dict[str, dict[str, float]], columns: list[str]) -> Table:
    """One row per method, one column per metric (floats with 3 decimals)."""
    table = Table(title=title)
    table.add_column("method")
    for c in columns:
        table.add_column(c, justify="right")
    for name, values in rows.items():
        table.add_row(
            name, *(f"{values[c]:.3f}" if isinstance(values.get(c), float) else str(values.get(c, "")) for c in columns)
        )
    return table


def results_plot(
    rows: dict[str, dict[str, float]],
    logs: dict[str, list[dict]],
    path: Path,
    title: str,
    versus: dict[str, dict | None] | None = None,
    alpha: float = 0.05,
) -> None:
    """A PNG: training loss per step of each run (left), nDCG@10 of each method (right). With `versus`
    (method -> its nDCG@10 comparison with the baseline, llara.comparison's, None for the baseline),
    each bar also shows the difference and the Holm-corrected randomization p-value, * where below
    `alpha`, and a dashed line marks the baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5), gridspec_kw={"width_ratios": [1, 1.5]})
    for name, history in logs.items():
        if history:
            left.plot([e["step"] for e in history], [e["loss"] for e in history], marker=".", label=name)
    left.set(xlabel="step", ylabel="training loss", title="training loss")
    if any(logs.values()):
        left.legend()
    names = list(rows)[::-1]  # barh draws bottom-up: the first method on top
    versus = versus or {}
    baseline = next((n for n in rows if n in versus and versus[n] is None), None)
    colors = ["tab:gray" if n == baseline else "tab:blue" for n in names]
    right.barh(names, [rows[n]["nDCG@10"] for n in names], color=colors)
    for i, n in enumerate(names):
        c = versus.get(n)
        label = f" {rows[n]['nDCG@10']:.3f}"
        if c is not None:
            star = "*" if c["p_permutation_holm"] < alpha else ""
            label += f"   Δ {c['delta']:+.3f}, p {_p(c['p_permutation_holm'])}{star}"
        right.text(rows[n]["nDCG@10"], i, label, va="center", fontsize=9)
    xlabel = "nDCG@10"
    if baseline is not None:
        right.axvline(rows[baseline]["nDCG@10"], color="tab:gray", linestyle="--", linewidth=1)
        xlabel += f"\nΔ: vs {baseline}; p: paired randomization test, Holm-corrected; * p < {alpha}"
    right.set(xlabel=xlabel, title=title, xlim=(0, 1.45 if versus else 1.15))
    right.set_xticks([i / 5 for i in range(6)])
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------- demo
def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _versus(c: dict | None) -> list[str]:
    """Δ, p rand (Holm), p t-test (Holm), W/T/L of one comparison with the baseline (blank for the baseline)."""
    if c is None:
        return ["(baseline)", "", "", ""]
    return [
        f"{c['delta']:+.3f}" + ("*" if c["significant"] else ""),
        f"{_p(c['p_permutation'])} ({_p(c['p_permutation_holm'])})",
        f"{_p(c['p_t'])} ({_p(c['p_t_holm'])})",
        f"{c['wins']}/{c['ties']}/{c['losses']}",
    ]


def _demo_cells(row: dict, columns: list[str]) -> list[str]:
    return [f"{row['minutes']:.1f}" if c == "minutes" else f"{row['metrics'][c]:.3f}" for c in columns]


def _demo_caption(report: dict) -> str:
    s = report["significance"]
    return (
        f"Δ: difference to BM25 in {s['metrics'][0]} over the {report['queries']} queries. Two-sided paired tests: "
        f"randomization (sign flips, {s['tests']['permutation']['resamples']} resamples) and t-test; in brackets "
        f"Holm-corrected over the {s['correction']['family']}. * Holm randomization p < {s['alpha']}. W/T/L: "
        f"queries better/tied/worse than BM25. minutes: {report['minutes']}."
    )


def demo_table(report: dict) -> Table:
    """`llara demo`: one row per method, its metrics and its test against BM25 on the first tested metric."""
    metric = report["significance"]["metrics"][0]
    table = Table(title=f"llara demo: {report['data']} ({report['queries']} queries), model {report['model']}")
    table.add_column("method")
    for c in report["columns"]:
        table.add_column(c, justify="right")
    for name in (f"Δ {metric} vs BM25", "p rand (Holm)", "p t-test (Holm)", "W/T/L"):
        table.add_column(name, justify="right", no_wrap=True)
    for name, r in report["rows"].items():
        table.add_row(escape(name), *_demo_cells(r, report["columns"]), *_versus((r["vs_bm25"] or {}).get(metric)))
    table.caption = _demo_caption(report)
    return table


def demo_markdown(report: dict) -> str:
    """OUTPUT/results.md: the terminal's table, then every row against BM25 on each tested metric."""
    columns, s = report["columns"], report["significance"]
    metric = s["metrics"][0]
    lines = [
        f"# llara demo: {report['data']} ({report['queries']} queries), model {report['model']}",
        "",
        f"| method | {' | '.join(columns)} | Δ {metric} vs BM25 | p rand (Holm) | p t-test (Holm) | W/T/L |",
        "|---|" + "---:|" * (len(columns) + 4),
    ]
    for name, r in report["rows"].items():
        cells = [*_demo_cells(r, columns), *_versus((r["vs_bm25"] or {}).get(metric))]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", _demo_caption(report), "", "## Every row vs BM25", ""]
    lines += [
        "| method | metric | mean | Δ | p rand (Holm) | p t-test (Holm) | W/T/L |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in report["rows"].items():
        for m, c in (r["vs_bm25"] or {}).items():
            lines.append(f"| {name} | {m} | {r['metrics'][m]:.4f} | " + " | ".join(_versus(c)) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------- runs (compare)
def comparison_table(result: dict) -> Table:
    """`llara compare`: one row per run and metric; the caption says which tests and correction."""
    table = Table(title=f"{result['queries']} judged queries of {result['qrels']}; baseline: {result['baseline']}")
    for name in ("run", "metric", "mean", "Δ", "p rand (Holm)", "p t-test (Holm)", "W/T/L"):
        numeric = name not in ("run", "metric")
        table.add_column(name, justify="right" if numeric else "left", no_wrap=numeric)
    by_run = {}
    for c in result["comparisons"]:
        by_run.setdefault(c["run"], {})[c["metric"]] = c
    for i, run in enumerate(result["runs"]):
        for j, m in enumerate(result["metrics"]):
            c = by_run.get(run["label"], {}).get(m)
            cells = [run["label"] if j == 0 else "", m, f"{run['metrics'][m]:.4f}"]
            if c is None:
                cells += ["(baseline)", "", "", ""]
            else:
                star = "*" if c["significant"] else ""
                cells += [
                    f"{c['delta']:+.4f}{star}",
                    f"{c['p_permutation']:.3f} ({c['p_permutation_holm']:.3f})",
                    f"{c['p_t']:.3f} ({c['p_t_holm']:.3f})",
                    f"{c['wins']}/{c['ties']}/{c['losses']}",
                ]
            table.add_row(*cells, end_section=j == len(result["metrics"]) - 1 and i < len(result["runs"]) - 1)
    perm = result["tests"]["permutation"]
    table.caption = (
        f"Δ: difference to the baseline. Two-sided paired tests: randomization (sign flips, {perm['resamples']} "
        f"resamples, exact if 2^queries <= that) and t-test; in brackets Holm-corrected over the "
        f"{len(result['comparisons'])} comparisons (runs x metrics). * Holm randomization p < {result['alpha']}. "
        "W/T/L: queries better/tied/worse. A query missing from a run scores 0."
    )
    return table


# ------------------------------------------------------------------------------- explain
def _show(token: str) -> str:
    return repr(token)[1:-1] if token.strip() == token else repr(token)  # make leading spaces visible


def explanation_table(e: Explanation) -> Table:
    """`llara explain TEXT`: rank, token, probability, whether the token is one of the text's own."""
    table = Table(
        title=f"{e.side} ({'EBAE' if e.side == 'passage' else 'EBAR'} prompt, {e.recipe} recipe)",
        caption=f"own tokens in top {len(e.tokens)}: {e.reconstruction:.0%} (self-reconstruction); "
        f"top-{len(e.tokens)} mass {e.top_k_mass:.3f}",
    )
    table.add_column("#", justify="right")
    table.add_column("token")
    table.add_column("prob", justify="right")
    table.add_column("in text", justify="center")
    for rank, t in enumerate(e.tokens, start=1):
        style = "bold green" if t.in_text else None
        table.add_row(str(rank), escape(_show(t.token)), f"{t.prob:.4f}", "✓" if t.in_text else "", style=style)
    return table


def explanation_comparison_table(c: Comparison) -> Table:
    """`llara explain --query --document`: query and document tokens side by side; tokens in both lists in bold."""
    shared = {t.id for t in c.shared}
    table = Table(
        title=f"query (EBAR) vs document (EBAE), {c.query.recipe} recipe: cosine {c.cosine:.4f}",
        caption=f"shared: {', '.join(escape(_show(t.token)) for t in c.shared) or 'none'}; self-reconstruction "
        f"query {c.query.reconstruction:.0%}, document {c.document.reconstruction:.0%}",
    )
    table.add_column("#", justify="right")
    for side in ("query", "document"):
        table.add_column(f"{side} token")
        table.add_column("prob", justify="right")
    for rank, (q, d) in enumerate(zip(c.query.tokens, c.document.tokens, strict=True), start=1):
        cells = [str(rank)]
        for t in (q, d):
            mark = "bold magenta" if t.id in shared else "green" if t.in_text else ""
            cells += [f"[{mark}]{escape(_show(t.token))}[/]" if mark else escape(_show(t.token)), f"{t.prob:.4f}"]
        table.add_row(*cells)
    return table


# ------------------------------------------------------------------------------- ablate
def _cell(stats: dict) -> str:
    return f"{stats['mean']:.4f}" + ("" if stats["std"] is None else f" ± {stats['std']:.4f}")


def ablation_arms_table(report: dict) -> Table:
    table = Table(title=f"llara ablate: {report['data']} ({report['split']}, {report['queries']} queries)")
    table.add_column("arm")
    table.add_column("runs", justify="right")
    for m in report["metrics"]:
        table.add_column(m, justify="right")
    for arm, a in report["arms"].items():
        table.add_row(arm, str(len(a["runs"])), *(_cell(a["metrics"][m]) for m in report["metrics"]))
    table.caption = f"mean ± sample std over {report['seeds']} seed(s) for the fine-tuned arms"
    return table


def ablation_seeds_table(report: dict) -> Table:
    table = Table(title="adaptation effect: ft-adapted vs ft-raw, same data, settings and seed")
    for name in ("seed", "metric", "ft-raw", "ft-adapted", "Δ", "p rand (Holm)", "p t-test (Holm)", "W/T/L"):
        table.add_column(name, justify="left" if name == "metric" else "right")
    for p in report["adaptation_effect"]["per_seed"]:
        for i, c in enumerate(p["comparisons"]):
            m, s = c["metric"], p["seed"]
            table.add_row(
                str(s) if i == 0 else "",
                m,
                f"{p['metrics'][f'ft-raw-s{s}'][m]:.4f}",
                f"{p['metrics'][f'ft-adapted-s{s}'][m]:.4f}",
                f"{c['delta']:+.4f}" + ("*" if c["significant"] else ""),
                f"{c['p_permutation']:.3f} ({c['p_permutation_holm']:.3f})",
                f"{c['p_t']:.3f} ({c['p_t_holm']:.3f})",
                f"{c['wins']}/{c['ties']}/{c['losses']}",
                end_section=i == len(p["comparisons"]) - 1,
            )
    table.caption = (
        "; ".join(
            f"{m}: {e['seeds_favouring_adaptation']} of {report['seeds']} seeds favour adaptation "
            f"(mean Δ {e['mean_delta']:+.4f})"
            for m, e in report["adaptation_effect"]["summary"].items()
        )
        + ". * Holm randomization p < alpha."
    )
    return table


def ablation_markdown(report: dict) -> str:
    """OUT/ablation.md: the three tables of the terminal as Markdown."""
    ms = report["metrics"]
    t = report["training"]
    lines = [
        f"# llara ablate: {report['data']} ({report['split']}, {report['queries']} queries), model {report['model']}",
        "",
        f"Training rows: {t['source']}"
        + (f", {t['query_mode']} -> text queries ({t['why']})" if "query_mode" in t else "")
        + f" ({t.get('file', '')}). No judgements are used for training or selection.",
        "",
        "| arm | runs | " + " | ".join(ms) + " |",
        "|---|---:|" + "---:|" * len(ms),
    ]
    for arm, a in report["arms"].items():
        lines.append(f"| {arm} | {len(a['runs'])} | " + " | ".join(_cell(a["metrics"][m]) for m in ms) + " |")
    lines += ["", f"Mean ± sample standard deviation over {report['seeds']} seed(s) for the fine-tuned arms.", ""]
    lines += [
        "## Adaptation effect per seed (ft-adapted vs ft-raw)",
        "",
        "| seed | metric | ft-raw | ft-adapted | Δ | p rand (Holm) | p t-test (Holm) | W/T/L |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for p in report["adaptation_effect"]["per_seed"]:
        s = p["seed"]
        for c in p["comparisons"]:
            m = c["metric"]
            lines.append(
                f"| {s} | {m} | {p['metrics'][f'ft-raw-s{s}'][m]:.4f} | {p['metrics'][f'ft-adapted-s{s}'][m]:.4f} | "
                f"{c['delta']:+.4f}{'*' if c['significant'] else ''} | "
                f"{c['p_permutation']:.3f} ({c['p_permutation_holm']:.3f}) | {c['p_t']:.3f} ({c['p_t_holm']:.3f}) | "
                f"{c['wins']}/{c['ties']}/{c['losses']} |"
            )
    lines.append("")
    for m, e in report["adaptation_effect"]["summary"].items():
        lines.append(
            f"- {m}: {e['seeds_favouring_adaptation']} of {report['seeds']} seeds favour adaptation, "
            f"{e['seeds_against']} against (mean Δ {e['mean_delta']:+.4f}; significant for adaptation in "
            f"{e['seeds_significant_for_adaptation']})"
        )
    v = report["vs_bm25"]
    lines += [
        "",
        "## Every final run vs BM25",
        "",
        f"Holm-corrected over the {len(v['comparisons'])} comparisons (runs x metrics); * Holm randomization "
        f"p < {v['alpha']}.",
        "",
        "| run | metric | mean | Δ | p rand (Holm) | p t-test (Holm) | W/T/L |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for c in v["comparisons"]:
        mean = next(r["metrics"][c["metric"]] for r in v["runs"] if r["label"] == c["run"])
        lines.append(
            f"| {c['run']} | {c['metric']} | {mean:.4f} | {c['delta']:+.4f}{'*' if c['significant'] else ''} | "
            f"{c['p_permutation']:.3f} ({c['p_permutation_holm']:.3f}) | {c['p_t']:.3f} ({c['p_t_holm']:.3f}) | "
            f"{c['wins']}/{c['ties']}/{c['losses']} |"
        )
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------- suite (evaluate, several --data)
def _suite_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    """The suite's header and rows: per collection and metric BM25, the method, and Δ (Holm p); then
    the macro average with its ratio to BM25's. BM25 alone: one column per metric."""
    method, metrics = report["method"], report["metrics"]
    alone = method == "bm25"
    header = ["collection", "queries"]
    for m in metrics:
        header += [m] if alone else [f"BM25\n{m}", f"{method}\n{m}", f"Δ {m}\n(p Holm)"]
    rows = []
    for r in report["collections"]:
        cells = [r["collection"], str(r["queries"])]
        for m in metrics:
            if alone:
                cells.append(f"{r['bm25'][m]:.3f}")
                continue
            c = (r["vs_bm25"] or {}).get(m)
            star = "*" if c and c["significant"] else ""
            p = f"\n({_p(c['p_permutation_holm'])})" if c else ""
            cells += [f"{r['bm25'][m]:.3f}", f"{r['method'][m]:.3f}", f"{r['method'][m] - r['bm25'][m]:+.3f}{star}{p}"]
        rows.append(cells)
    macro = report["macro"]
    cells = ["macro", ""]
    for m in metrics:
        if alone:
            cells.append(f"{macro['bm25'][m]:.3f}")
            continue
        cells += [f"{macro['bm25'][m]:.3f}", f"{macro['method'][m]:.3f}", f"{macro['ratio'][m]:.2f}x"]
    rows.append(cells)
    return header, rows


def _suite_caption(report: dict) -> str:
    counts = "; ".join(
        f"{m}: significantly better on {t['better']}, worse on {t['worse']} of {t['collections']}"
        for m, t in report["significant"].items()
    )
    if report["method"] == "bm25":
        return f"BM25 on each collection ({report['split']} judgements); macro: the unweighted mean over collections."
    return (
        f"{report['method']} against BM25 on each collection ({report['split']} judgements). Δ: the difference "
        f"to BM25, * where significant, p Holm-corrected ({report['tests']}). Macro: the unweighted mean over "
        f"collections, and its ratio to BM25's. {counts}."
    )


def suite_table(report: dict) -> Table:
    header, rows = _suite_rows(report)
    table = Table(title=f"llara evaluate: {len(report['collections'])} collections, {report['method']}")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right", no_wrap=i > 0)
    for i, cells in enumerate(rows):
        table.add_row(*(escape(c) for c in cells), end_section=i == len(rows) - 2)
    table.caption = _suite_caption(report)
    return table


def suite_markdown(report: dict) -> str:
    header, rows = _suite_rows(report)
    what = "BM25" if report["method"] == "bm25" else f"{report['method']} against BM25"
    lines = [f"# {what}, {len(report['collections'])} collections", ""]
    if report.get("model"):
        lines += [f"Model: `{report['model']}`.", ""]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    lines += [line(header), "|" + "---|" * len(header), *map(line, rows)]
    return "\n".join([*lines, "", _suite_caption(report), ""])


# ------------------------------------------------------------------------------- pipeline
def pipeline_table(report: dict) -> Table:
    """`llara pipeline`'s check: BM25, the model and the default hybrid on the held-out weak pairs."""
    weak = report["check"]["weak_pairs"]
    table = Table(title=f"held-out weak pairs of {report['corpus']}")
    table.add_column("retriever")
    table.add_column("nDCG@10", justify="right")
    if weak is None:
        table.caption = "no document of the corpus could give a weak pair (all too short): nothing to check"
        return table
    w = weak["weight"]
    hybrid = "hybrid: BM25 alone (dense weight 0)" if w == 0 else f"hybrid (score fusion, dense weight {w:g})"
    for name, value in (("BM25", weak["bm25"]), (report["model"], weak["dense"]), (hybrid, weak["weights"][f"{w:g}"])):
        table.add_row(escape(name), f"{value:.3f}")
    sources = ", ".join(f"{n} {s}" for s, n in weak["sources"].items())
    table.caption = (
        f"{weak['pairs']} documents no training row came from ({sources} queries), each query's one relevant "
        "document the rest of its own: a signal without labels, not a judged metric (it favours BM25). "
        "`--fusion auto` uses this weight (see benchmarks/RESULTS.md for how it tracks judged results)."
    )
    return table
