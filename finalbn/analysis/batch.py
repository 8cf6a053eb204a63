"""The batch-size optimum: which batch size gives the best minority F1, how sure, and are its neighbours worse?

Method: per batch size, the mean over seeds of the final test metric. The
optimum is the batch size with the highest mean, stated no more precisely
than the grid and the seeds allow: on the grid (doublings, a log2 axis) it
lies between the swept neighbours of the best, and resampling each batch
size's seeds with replacement (2,000 times, seeded) gives how often each
batch size comes out best and the 95% range of the winner; the interval is
that range widened to the neighbours. A neighbour is "distinguishable" when
a permutation test of the two groups of runs (exact for few seeds) gives
p < 0.05; the bootstrap CI of (optimum - neighbour) is shown beside it. Runs
at different batch sizes share a seed but not a batch order, so they are
compared unpaired. With fewer than 5 seeds per batch size the description
says the intervals are unreliable and how many seeds a two-sample t-test
would need to tell the best from its closest neighbour. At a fixed number of
epochs a larger batch also makes fewer optimizer steps: the description
states that confound (or that ``train.steps`` held the steps equal).
``batch_section`` is the report's section for a batch-size sweep.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from finalbn.analysis import figures as fig
from finalbn.analysis.headline import FEW_SEEDS, MAX_SEEDS, Headline, SeedCount, most_needed, seeds_to_ask
from finalbn.analysis.sections import METRICS, SECTIONS, Context, group_text
from finalbn.analysis.stats import DEFAULT, Bootstrap, aggregate, permutation_p
from finalbn.analysis.thesis import FIGURE_4_7_BEST_BATCH
from finalbn.analysis.threshold import POWER, seeds_needed
from finalbn.errors import UserError

BATCH = "train.batch_size"
# Seeds per batch size from which the exact two-group permutation test can give p < 0.05 (2 / C(8, 4)).
PERMUTATION_SEEDS = 4


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
    # Swept sizes: the optimum lies between the best's neighbours on the grid.
    sizes: tuple[int, ...]
    # Fewest runs at a batch size, the pooled spread of runs, and the seeds that would tell
    # the best from its closest neighbour.
    seeds: int
    spread: float
    seeds_needed: int | None
    # Optimizer steps per run by batch size (empty: train.steps held them equal, or unknown).
    steps: dict[int, int]
    # train.steps when every run trained that many steps.
    fixed_steps: int | None

    @property
    def interval(self) -> tuple[int, int]:
        """Seed noise (the winners' 95% range) and grid resolution (the best's swept neighbours) together."""
        index = self.sizes.index(self.best)
        below, above = self.sizes[max(index - 1, 0)], self.sizes[min(index + 1, len(self.sizes) - 1)]
        return min(self.range_low, below), max(self.range_high, above)

    @property
    def seeds_to_ask(self) -> int | None:
        """Seeds per batch size a headline asks for: telling the best from its closest neighbour, the
        permutation test's and the bootstrap's floors."""
        closest = min((abs(n.difference) for n in self.neighbours), default=0.0)
        return seeds_to_ask(self.seeds_needed, self.spread, closest, max(FEW_SEEDS, PERMUTATION_SEEDS))

    def describe(self) -> str:
        """One line: the best swept size, the optimum's interval, the neighbours, the step-count confound;
        with too few seeds the caveat comes first."""
        where = "".join(f" {k.rsplit('.', 1)[-1]}={v}" for k, v in self.group.items())
        low, high = self.interval
        caveat = self._seed_caveat()
        text = (
            f"{self.metric}{where}: {caveat + '; as measured, ' if caveat else ''}best of swept batch sizes "
            f"{self.sizes[0]}-{self.sizes[-1]} is {self.best} ({self.mean:.3f} [95% CI {self.low:.3f}, "
            f"{self.high:.3f}]), optimum between {low} and {high} (the best's swept neighbours and the 95% range of "
            f"the winner over seed resamples; {self.best} wins {self.best_share[self.best]:.0%})"
        )
        if self.best in (self.sizes[0], self.sizes[-1]):
            text += f", at the edge of the grid: the optimum may lie beyond {self.best}"
        parts = [
            f"{n.batch_size} {'distinguishable' if n.distinguishable else 'not distinguishable'} "
            f"(diff {n.difference:+.3f} [{n.low:+.3f}, {n.high:+.3f}], p {n.p_value:.2f})"
            for n in self.neighbours
        ]
        if parts:
            text += "; neighbours: " + ", ".join(parts)
        return text + self._steps_text()

    def finding(self) -> str:
        """The headline's sentence: the optimum in short, or with too few seeds the best mean as measured."""
        where = "".join(f" {k.rsplit('.', 1)[-1]}={v}" for k, v in self.group.items())
        swept = f"{self.sizes[0]}-{self.sizes[-1]}"
        if self.seeds < FEW_SEEDS:
            return f"{self.metric}{where}: highest mean {self.mean:.3f} at batch {self.best} of {swept}"
        low, high = self.interval
        edge = ", at the grid's edge" if self.best in (self.sizes[0], self.sizes[-1]) else ""
        told = [n.batch_size for n in self.neighbours if n.distinguishable]
        if not self.neighbours:
            neighbours = ""
        elif len(told) == len(self.neighbours):
            neighbours = f"; worse at {' and '.join(map(str, told))} (p < {self.neighbours[0].alpha:g})"
        elif told:
            neighbours = f"; worse at {told[0]} (p < {self.neighbours[0].alpha:g}), not told from the other neighbour"
        else:
            neighbours = "; not told from its neighbours"
        return (
            f"{self.metric}{where}: best of {swept} is {self.best} ({self.mean:.3f} [{self.low:.3f}, "
            f"{self.high:.3f}]), optimum between {low} and {high}{edge}{neighbours}"
        )

    def confound(self) -> str | None:
        """The step-count confound in a few words, when the batch size sets the number of steps."""
        if not self.steps:
            return None
        sizes = sorted(self.steps)
        return (
            f"step count confounded: batch {sizes[0]} makes {self.steps[sizes[0]]} optimizer steps, "
            f"{sizes[-1]} makes {self.steps[sizes[-1]]} (set train.steps to hold them equal)"
        )

    def _steps_text(self) -> str:
        if self.fixed_steps is not None:
            return f"; train.steps {self.fixed_steps} at every batch size: no step-count confound"
        if not self.steps:
            return ""
        sizes = sorted(self.steps)
        return (
            f"; confounded with step count: at a fixed number of epochs batch {sizes[0]} makes "
            f"{self.steps[sizes[0]]} optimizer steps and {sizes[-1]} makes {self.steps[sizes[-1]]} "
            "(set train.steps to hold them equal)"
        )

    def _seed_caveat(self) -> str:
        if self.seeds >= FEW_SEEDS or not self.neighbours:
            return ""
        closest = min(self.neighbours, key=lambda n: abs(n.difference))
        text = f"{self.seeds} seed(s) per batch size (< {FEW_SEEDS}): the intervals are unreliable"
        if self.spread != self.spread:
            return text + " and there is no spread to size more seeds from"
        takes = f"more than {MAX_SEEDS}" if self.seeds_needed is None else str(self.seeds_needed)
        return (
            text + f"; telling {self.best} from {closest.batch_size} ({closest.difference:+.3f}) at the observed "
            f"spread (sd {self.spread:.3f}) takes {takes} seeds per batch size by a two-sample "
            f"t-test (5%, {POWER:.0%} power), and the exact permutation test reaches p < 0.05 from "
            f"{PERMUTATION_SEEDS} seeds"
        )


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
    neighbours = [
        _neighbour(replicates, runs, means, best, i, sizes, boot) for i in (best - 1, best + 1) if 0 <= i < len(sizes)
    ]
    spread = _pooled_spread(runs)
    closest = min((abs(n.difference) for n in neighbours), default=0.0)
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
        neighbours=neighbours,
        curve=curve,
        sizes=tuple(int(b) for b in sizes),
        seeds=min(r.size for r in runs),
        spread=spread,
        seeds_needed=seeds_needed(closest, spread, paired=False),
        steps=_steps(frame),
        fixed_steps=_fixed_steps(frame),
    )


def _pooled_spread(runs: list[np.ndarray]) -> float:
    """Standard deviation of runs within a batch size, pooled over batch sizes; NaN with one run each."""
    dof = sum(r.size - 1 for r in runs if r.size > 1)
    if dof == 0:
        return float("nan")
    return float(np.sqrt(sum(np.var(r, ddof=1) * (r.size - 1) for r in runs if r.size > 1) / dof))


def _fixed_steps(frame: pl.DataFrame) -> int | None:
    """``train.steps`` when every run trained that one number of steps."""
    if "train.steps" not in frame.columns:
        return None
    values = frame["train.steps"].unique().to_list()
    return int(values[0]) if len(values) == 1 and values[0] is not None else None


def _steps(frame: pl.DataFrame) -> dict[int, int]:
    """Optimizer steps per run at each batch size, epochs x full batches (a ragged last batch is dropped)."""
    columns = ("data.train_majority", "data.train_minority", "train.epochs")
    if _fixed_steps(frame) is not None or any(c not in frame.columns for c in columns):
        return {}
    rows = frame.select(
        BATCH, ((pl.col(columns[0]) + pl.col(columns[1])) // pl.col(BATCH) * pl.col(columns[2])).alias("steps")
    ).unique(BATCH)
    return {int(b): int(n) for b, n in rows.iter_rows()}


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
            "interval": f"{o.interval[0]}-{o.interval[1]}",
            "seeds": o.seeds,
            "seeds_needed": o.seeds_needed,
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
def batch_section(ctx: Context) -> Headline:
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
        "The interval holds the best's swept neighbours (the grid's resolution) and the 95% range of the winner "
        "over seed resamples. At a fixed number of epochs a larger batch makes fewer optimizer steps, so batch "
        f"size and step count change together. Thesis: best at {FIGURE_4_7_BEST_BATCH}, worse with larger batches."
    )
    images = _training_images(data.trials)
    if images:
        doc.paragraph(f"This sweep trains on {images} images per run; the thesis' 64 was with 1,010 (1,000 + 10).")
    doc.table(table, "Best batch size by minority F1", 4)
    curves = aggregate(data.trials.with_columns(pl.col(BATCH).cast(pl.Int64)), [BATCH, *groups], list(METRICS[:2]))
    curves = curves.sort(BATCH)
    ctx.save_table(curves, "f1_by_batch")
    doc.table(curves, "Test F1 per batch size (mean, std, 95% CI over seeds)")
    titles = ctx.names.titles()
    for group_values in curves.select(groups).unique(maintain_order=True).iter_rows(named=True) if groups else [{}]:
        subset = curves.filter(*[pl.col(k) == v for k, v in group_values.items()]) if group_values else curves
        chosen = [o for o in found if o.group == {k: str(v) for k, v in group_values.items()}]
        suffix = group_text(group_values) if group_values else ""
        ctx.save_figure(
            batch_figure(subset, chosen, title=f"{data.name} {suffix}".strip(), titles=titles),
            "batch_size" + (f"_{len(ctx.doc.figures())}" if group_values else ""),
            f"Figure 4.7: test F1 of the {titles['f1_minority']} and the {titles['f1_majority']} against batch "
            f"size (log2 axis){f' at {suffix}' if suffix else ''} (mean over seeds, 95% bootstrap band); star: "
            "the best swept size by minority F1; green: its interval; grey dashed: the thesis' 64.",
        )
    return batch_headline(found, thesis=not ctx.names.own)


def batch_headline(found: list[BatchOptimum], thesis: bool = True, label: str = "Batch optimum") -> Headline:
    """One sentence per optimum, then the step-count confound; with too few seeds first how many would do."""
    needed = most_needed([o.seeds_to_ask for o in found])
    seeds = SeedCount(min(o.seeds for o in found), "batch size", "to tell the best from its neighbours", needed)
    reference = f"; thesis: {FIGURE_4_7_BEST_BATCH}" if thesis else ""
    findings = [o.finding() + reference for o in found]
    confound = found[0].confound()
    return Headline.of(label, findings + ([confound] if confound else []), seeds)


def _training_images(trials: pl.DataFrame) -> str:
    columns = ("data.train_majority", "data.train_minority")
    if any(c not in trials.columns for c in columns):
        return ""
    totals = sorted(set((trials[columns[0]] + trials[columns[1]]).to_list()))
    return ", ".join(str(t) for t in totals)


def batch_figure(
    curves: pl.DataFrame, optima: Sequence[BatchOptimum], title: str = "", titles: Mapping[str, str] = fig.CLASS_TITLES
) -> Figure:
    """Figure 4.7: test F1 against batch size (log scale) with 95% CI, the optimum marked and its
    interval (grid neighbours and seed noise) shaded."""
    figure = Figure(figsize=(7, 4.2))
    ax = figure.subplots()
    batch = "train.batch_size"
    for metric, color in (("f1_minority", fig.COLORS["treated"]), ("f1_majority", fig.COLORS["control"])):
        if f"{metric}_mean" not in curves.columns:
            continue
        line = curves.sort(batch)
        fig.band(ax, line[batch], line, metric, color, "-", titles[metric], marker="o")
    for optimum in optima:
        ax.axvspan(*optimum.interval, color="#27ae60", alpha=0.1)
        ax.plot(
            [optimum.best],
            [optimum.mean],
            marker="*",
            ms=16,
            color="#27ae60",
            ls="none",
            label=f"optimum {optimum.best} ({optimum.metric})",
        )
    ax.axvline(FIGURE_4_7_BEST_BATCH, color="grey", ls="--", lw=1, label="thesis: best at 64")
    ax.set_xscale("log", base=2)
    sizes = curves[batch].to_list()
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("batch size")
    ax.set_ylabel("test F1")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    if title:
        ax.set_title(title)
    return figure
