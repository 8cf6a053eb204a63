"""docs/reproduction.md's section "Final BN against the imbalanced-learning literature": the baselines sweeps.

The thesis compares final BN with a weighted loss only. Here every method the baselines sweep declares a
contrast for is set against final BN per plant (and learning rate), under both deployment priors, and, in the
ratio sweep, per imbalance ratio. A comparison's verdict, fixed before any result was seen: "final BN ahead"
when the 95% interval of the paired difference (method - final BN, over seeds) lies below zero, "method ahead"
when it lies above, "unresolved" when it holds zero. The Findings table gets one row per prior, whose verdict
on the claim "final BN finds the minority at least as well as every standard remedy" is: contradicted when any
method is ahead in any setting; confirmed when final BN is ahead in every comparison; else inconclusive.
"""

from __future__ import annotations

import polars as pl

from finalbn.analysis.baselines import PRIORS, contrast_table
from finalbn.analysis.contrasts import arms_of, contrasts_of
from finalbn.analysis.grid import AXIS
from finalbn.analysis.headline import FEW_SEEDS
from finalbn.analysis.render import Document
from finalbn.analysis.sweep_data import SweepData
from finalbn.analysis.verdicts import Finding, Part, Verdict

CLAIM = "final BN finds the minority at least as well as every standard remedy for imbalance"


def baselines_part(data: SweepData | None) -> Part:
    """Per method and plant (and learning rate), both priors: the paired difference to final BN and its verdict."""
    return _part(data, "Baselines", "Final BN against the imbalanced-learning literature", "setting")


def baselines_ratio_part(data: SweepData | None) -> Part:
    """The strongest baselines against final BN per imbalance ratio (0.005-0.1 on Apple)."""
    return _part(data, "Baselines by ratio", "The strongest baselines against final BN by imbalance ratio", "ratio")


def _part(data: SweepData | None, where: str, heading: str, unit: str) -> Part:
    if data is None:
        return Part([Finding(where, CLAIM, "-", "-", "not run")], _nothing)
    contrasts = [c for c in contrasts_of(data.spec) if c.axis == "method" and c.control == "final_bn"]
    if not contrasts:
        return Part([Finding(where, CLAIM, "-", "no contrast with final_bn declared", "not declared")], _nothing)
    frame = arms_of(data.trials, data.spec).trials
    groups = [c for c in data.scientific_axes() if c != AXIS + "method"]
    summary = contrast_table(frame, contrasts, groups).with_columns(_verdict().alias("verdict"))
    findings = [_finding(where, summary, metric, prior, unit) for prior, metric in PRIORS.items()]

    def blocks(doc: Document) -> None:
        doc.heading(heading)
        doc.paragraph(
            "Each cell: the method's minority F1 minus final BN's, mean over seeds of the paired difference "
            "[95% percentile-bootstrap interval], and the verdict (final BN ahead: the interval is below zero; "
            f"method ahead: above; unresolved: it holds zero; too few seeds: fewer than {FEW_SEEDS} pairs). "
            "The training prior weighs the balanced test set to "
            "the training class frequencies (1,000 : 10): what a deployed detector meets. No method's parameter or "
            "threshold rule was tuned; each runs at its paper's default (docs/baselines.md)."
        )
        order = {g: data.label_order(g) for g in groups}
        for metric, prior in ((m, p) for p, m in PRIORS.items()):
            shown = _wide(summary.filter(pl.col("metric") == metric), groups, order)
            doc.table(shown, f"Minority F1 under the {prior}: method - final BN per {unit}")

    return Part(findings, blocks)


def _nothing(doc: Document) -> None:
    return None


def _verdict() -> pl.Expr:
    """A comparison's verdict; with fewer than FEW_SEEDS pairs its interval undercovers, so none is resolved."""
    return (
        pl.when(pl.col("pairs") < FEW_SEEDS)
        .then(pl.lit("too few seeds"))
        .when(pl.col("difference_hi") < 0)
        .then(pl.lit("final BN ahead"))
        .when(pl.col("difference_lo") > 0)
        .then(pl.lit("method ahead"))
        .otherwise(pl.lit("unresolved"))
    )


def _finding(where: str, summary: pl.DataFrame, metric: str, prior: str, unit: str) -> Finding:
    rows = summary.filter(pl.col("metric") == metric)
    counts = {
        v: rows.filter(pl.col("verdict") == v).height
        for v in ("final BN ahead", "method ahead", "unresolved", "too few seeds")
    }
    ahead = rows.filter(pl.col("verdict") == "method ahead")["treated"].unique(maintain_order=True).to_list()
    verdict: Verdict = "inconclusive"
    if ahead:
        verdict = "contradicted"
    elif rows.height and counts["final BN ahead"] == rows.height:
        verdict = "confirmed"
    ours = (
        f"{rows.height} method x {unit} comparisons: final BN ahead in {counts['final BN ahead']}, the method in "
        f"{counts['method ahead']}{' (' + ', '.join(ahead) + ')' if ahead else ''}, {counts['unresolved']} unresolved"
        + (f", {counts['too few seeds']} with fewer than {FEW_SEEDS} seeds" if counts["too few seeds"] else "")
    )
    return Finding(f"{where}, {prior}", CLAIM, "not tested (weighted loss only)", ours, verdict)


def _wide(rows: pl.DataFrame, groups: list[str], order: dict[str, list[str]]) -> pl.DataFrame:
    """One row per method, one column per setting in the axes' declared order: "+0.012 [-0.030, +0.051] unresolved"."""
    rank = [pl.col(g).cast(pl.String).replace_strict(order[g], range(len(order[g])), default=None) for g in groups]
    cells = rows.sort(rank, maintain_order=True).with_columns(
        pl.format(
            "{} [{}, {}] {}",
            *(pl.col(c).map_elements(_signed, return_dtype=pl.String) for c in _INTERVAL),
            pl.col("verdict"),
        ).alias("cell"),
        _setting(groups).alias("setting"),
    )
    return cells.pivot(on="setting", index="treated", values="cell").rename({"treated": "method"})


_INTERVAL = ("difference_mean", "difference_lo", "difference_hi")


def _signed(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:+.3f}"


def _setting(groups: list[str]) -> pl.Expr:
    if not groups:
        return pl.lit("all")
    parts = [pl.format(f"{g.removeprefix(AXIS).rsplit('.', 1)[-1]}={{}}", pl.col(g)) for g in groups]
    return pl.concat_str(parts, separator=", ")
