"""The batch-size optimum: which batch size gives the best minority F1, how sure, and are its neighbours worse?

Method: per batch size, the mean over seeds of the final test metric. The
optimum is the batch size with the highest mean. Its uncertainty comes from
resampling each batch size's seeds with replacement (2,000 times, seeded):
how often each batch size comes out best, and the 95% range of the winning
batch size. A neighbour (the next smaller and larger batch size swept) is
"distinguishable" when a permutation test of the two groups of runs (exact
for few seeds) gives p < 0.05; the bootstrap CI of (optimum - neighbour) is
shown beside it. Runs at different batch sizes share a seed but not a batch
order, so they are compared unpaired. ``batch_section`` is the report's
section for a batch-size sweep.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from finalbn.analysis import figures as fig
from finalbn.analysis.sections import METRICS, SECTIONS, Context, group_text
from finalbn.analysis.stats import DEFAULT, Bootstrap, aggregate, permutation_p
from finalbn.analysis.thesis import FIGURE_4_7_BEST_BATCH
from finalbn.errors import UserError

BATCH = "train.batch_size"


@dataclass(frozen=True)
class Neighbour:
    batch_size: int
    mean: float
    # optimum - neighbour, with CI.
    difference: float
    low: float
    high: float
    # Two-sided permutation p-value of the difference (exact at small n).
    p_value: float
    alpha: float = 0.05

    @property
    def distinguishable(self) -> bool:
        """The permutation test rejects "same mean" at ``alpha``: with few seeds the bootstrap CI alone
        excludes zero far too easily (two runs per side: a 50% interval, not 95%)."""
        return bool(self.p_value < self.alpha)


@dataclass(frozen=True)
class BatchOptimum:
    metric: str
    group: dict[str, str]
    best: int
    mean: float
    low: float
    high: float
    # Share of bootstrap replicates in which each batch size is best.
    best_share: dict[int, float]
    # 95% range of the winning batch size over replicates.
    range_low: int
    range_high: int
    neighbours: list[Neighbour]
    curve: pl.DataFrame

    def describe(self) -> str:
        where = "".join(f" {k.rsplit('.', 1)[-1]}={v}" for k, v in self.group.items())
        text = (
            f"{self.metric}{where}: best batch size {self.best} ({self.mean:.3f} [95% CI {self.low:.3f}, "
            f"{self.high:.3f}]; best in {self.best_share[self.best]:.0%} of resamples, "
            f"95% range {self.range_low}-{self.range_high})"
        )
        parts = [
            f"{n.batch_size} {'distinguishable' if n.distinguishable else 'not distinguishable'} "
            f"(diff {n.difference:+.3f} [{n.low:+.3f}, {n.high:+.3f}], p {n.p_value:.2f})"
            for n in self.neighbours
        ]
        return text + ("; neighbours: " + ", ".join(parts) if parts else "")


def batch_optimum(
    trials: pl.DataFrame,
    metric: str = "f1_minority",
    group: dict[str, str] | None = None,
    boot: Bootstrap = DEFAULT,
) -> BatchOptimum:
    """The optimum of one curve: ``trials`` holds one group (other settings fixed)."""
    if BATCH not in trials.columns or metric not in trials.columns:
        raise UserError(f"table has no {BATCH!r} or {metric!r} column: the batch optimum needs both")
    frame = trials.with_columns(pl.col(BATCH).cast(pl.Int64))
    curve = aggregate(frame, [BATCH], [metric], boot).sort(BATCH)
    sizes = curve[BATCH].to_list()
    if len(sizes) < 2:
        raise UserError(f"only batch size {sizes[0]} was run: an optimum needs two or more batch sizes")
    runs = [frame.filter(pl.col(BATCH) == b)[metric].cast(pl.Float64).drop_nulls().to_numpy() for b in sizes]
    replicates = _replicates(runs, boot)
    means = curve[f"{metric}_mean"].to_numpy()
    best = int(np.nanargmax(means))
    winners = _winners(replicates, boot)
    share = {size: float(np.mean(winners == i)) for i, size in enumerate(sizes)}
    low_index, high_index = np.quantile(winners, boot.quantiles(), method="nearest")
    return BatchOptimum(
        metric=metric,
        group=group or {},
        best=int(sizes[best]),
        mean=float(means[best]),
        low=float(curve[f"{metric}_lo"][best]),
        high=float(curve[f"{metric}_hi"][best]),
        best_share=share,
        range_low=int(sizes[int(low_index)]),
        range_high=int(sizes[int(high_index)]),
        neighbours=[
            _neighbour(replicates, runs, means, best, i, sizes, boot)
            for i in (best - 1, best + 1)
            if 0 <= i < len(sizes)
        ],
        curve=curve,
    )


def batch_optima(
    trials: pl.DataFrame,
    metrics: Sequence[str] = ("f1_minority",),
    by: Sequence[str] = (),
    boot: Bootstrap = DEFAULT,
) -> list[BatchOptimum]:
    groups = trials.select(by).unique(maintain_order=True).iter_rows(named=True) if by else [{}]
    found = []
    for group in groups:
        subset = trials.filter(*[pl.col(k) == v for k, v in group.items()]) if group else trials
        found += [batch_optimum(subset, m, {k: str(v) for k, v in group.items()}, boot) for m in metrics]
    return found


def optimum_table(found: Sequence[BatchOptimum]) -> pl.DataFrame:
    rows = []
    for o in found:
        row = {
            "metric": o.metric,
            "group": ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in o.group.items()) or "all",
            "best_batch": o.best,
            "mean": o.mean,
            "ci_low": o.low,
            "ci_high": o.high,
            "best_share": o.best_share[o.best],
            "range": f"{o.range_low}-{o.range_high}",
        }
        for n in o.neighbours:
            side = "smaller" if n.batch_size < o.best else "larger"
            row[f"{side}_neighbour"] = (
                f"{n.batch_size}: {n.difference:+.3f} [{n.low:+.3f}, {n.high:+.3f}] p {n.p_value:.2f}"
                + (" distinguishable" if n.distinguishable else " not distinguishable")
            )
        rows.append(row)
    return pl.DataFrame(rows)


def _replicates(runs: list[np.ndarray], boot: Bootstrap) -> np.ndarray:
    """Bootstrap means (replicates x batch sizes), each batch size's runs resampled on their own."""
    rng = np.random.default_rng(boot.seed)
    table = np.full((boot.resamples, len(runs)), np.nan)
    for column, values in enumerate(runs):
        if values.size:
            values = np.sort(values)  # row order of the table must not change the interval
            picks = rng.integers(0, values.size, size=(boot.resamples, values.size))
            table[:, column] = values[picks].mean(axis=1)
    return table


def _winners(replicates: np.ndarray, boot: Bootstrap) -> np.ndarray:
    """Best batch size per replicate; ties (common with few seeds and F1 0) broken at random, seeded,
    so a tie does not always go to the smallest batch size."""
    rng = np.random.default_rng(boot.seed + 1)
    top = np.nanmax(replicates, axis=1, keepdims=True)
    tied = np.isclose(replicates, top, rtol=0, atol=1e-12)
    return np.argmax(tied * rng.random(replicates.shape), axis=1)


def _neighbour(
    replicates: np.ndarray,
    runs: list[np.ndarray],
    means: np.ndarray,
    best: int,
    other: int,
    sizes: list[int],
    boot: Bootstrap,
) -> Neighbour:
    differences = replicates[:, best] - replicates[:, other]
    low, high = np.quantile(differences, boot.quantiles())
    return Neighbour(
        batch_size=int(sizes[other]),
        mean=float(means[other]),
        difference=float(means[best] - means[other]),
        low=float(low),
        high=float(high),
        p_value=permutation_p(runs[best], runs[other], boot),
        alpha=1 - boot.level,
    )


# ------------------------------------------------------------------ report


@SECTIONS.register("batch_size")
def batch_section(ctx: Context) -> str:
    """Figure 4.7: the optimum per group, the F1 curve per batch size, one figure per group."""
    data, doc = ctx.data, ctx.doc
    doc.heading("Batch-size optimum (Figure 4.7)")
    groups = ctx.groups({BATCH})
    found = batch_optima(data.trials, metrics=("f1_minority",), by=groups)
    table = optimum_table(found)
    ctx.save_table(table, "batch_optimum")
    doc.paragraph(
        "Optimum = the batch size with the highest mean minority F1 over seeds; its CI and how often it wins "
        "come from resampling each batch size's seeds; a neighbour is distinguishable when a permutation test "
        "of the difference (exact for few seeds) gives p < 0.05; the bootstrap CI of the difference is shown too. "
        f"Thesis: best at {FIGURE_4_7_BEST_BATCH}, worse with larger batches."
    )
    images = _training_images(data.trials)
    if images:
        doc.paragraph(f"This sweep trains on {images} images per run; the thesis' 64 was with 1,010 (1,000 + 10).")
    doc.table(table, "Best batch size by minority F1", 4)
    curves = aggregate(data.trials.with_columns(pl.col(BATCH).cast(pl.Int64)), [BATCH, *groups], list(METRICS[:2]))
    curves = curves.sort(BATCH)
    ctx.save_table(curves, "f1_by_batch")
    doc.table(curves, "Test F1 per batch size (mean, std, 95% CI over seeds)")
    for group_values in curves.select(groups).unique(maintain_order=True).iter_rows(named=True) if groups else [{}]:
        subset = curves.filter(*[pl.col(k) == v for k, v in group_values.items()]) if group_values else curves
        chosen = [o for o in found if o.group == {k: str(v) for k, v in group_values.items()}]
        suffix = group_text(group_values) if group_values else ""
        ctx.save_figure(
            fig.batch_figure(subset, chosen, title=f"{data.name} {suffix}".strip()),
            "batch_size" + (f"_{len(ctx.doc.figures())}" if group_values else ""),
            "Figure 4.7: test F1 against batch size with final BN (mean over seeds, 95% bootstrap band); "
            "star: the optimum; grey dashed: the thesis' 64.",
        )
    return "Batch optimum: " + "; ".join(o.describe() for o in found) + f" (thesis: {FIGURE_4_7_BEST_BATCH})"


def _training_images(trials: pl.DataFrame) -> str:
    columns = ("data.train_majority", "data.train_minority")
    if any(c not in trials.columns for c in columns):
        return ""
    totals = sorted(set((trials[columns[0]] + trials[columns[1]]).to_list()))
    return ", ".join(str(t) for t in totals)
