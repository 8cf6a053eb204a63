"""The report section of an imbalance-ratio sweep (Figure 4.6): the threshold per class, with its CI.

The threshold itself is computed in ``threshold``; this is how the report
shows it: the table, the gain curve, the F1 curves and the figure, and the
brackets ``--refine`` bisects (``refine_brackets``, handed to the sweep by the CLI).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from finalbn.analysis import figures as fig
from finalbn.analysis.contrasts import NO_CONTRAST, arm_column, arms_of, headline_contrast
from finalbn.analysis.grid import AXIS
from finalbn.analysis.headline import Headline, SeedCount, most_needed
from finalbn.analysis.load import from_folder
from finalbn.analysis.sections import SECTIONS, Context, group_text
from finalbn.analysis.stats import aggregate
from finalbn.analysis.thesis import FIGURE_4_6_THRESHOLD
from finalbn.analysis.threshold import (
    FEW_SEEDS,
    MINORITY,
    RATIO,
    Threshold,
    minority_brackets,
    threshold_table,
    thresholds,
    with_ratio,
)
from finalbn.errors import UserError
from finalbn.sweep.spec import Contrast, SweepSpec


def studied(contrast: Contrast) -> set[str]:
    """The axes a threshold is computed over (the ratio and the contrast's); every other scientific axis
    is a group of its own."""
    return {MINORITY, contrast.axis}


def refine_brackets(folder: Path, spec: SweepSpec) -> list[tuple[int, int]]:
    """What ``--refine`` bisects after a round: the minority-F1 threshold's bracket per group of the
    finished sweep in ``folder``, in minority training images."""
    data = from_folder(folder, spec)
    contrast = headline_contrast(data.spec)
    if contrast is None:
        raise UserError(f"--refine needs the sweep's headline contrast: {NO_CONTRAST}; declare one in the sweep")
    groups = [c for c in data.scientific_axes() if c.removeprefix(AXIS) not in studied(contrast)]
    return minority_brackets(arms_of(data.trials, data.spec).trials, contrast, by=groups)


@SECTIONS.register("imbalance_ratio")
def imbalance_section(ctx: Context) -> Headline:
    data, doc = ctx.data, ctx.doc
    doc.heading("Imbalance threshold (Figure 4.6)")
    contrast = headline_contrast(data.spec)
    if contrast is None:
        ctx.skip("The imbalance threshold", NO_CONTRAST)
        return Headline("Imbalance threshold", (NO_CONTRAST,))
    arms = arms_of(data.trials, data.spec)
    for note in arms.notes():
        ctx.doc.note(note)
    trials = arms.trials
    groups = ctx.groups(studied(contrast))
    found = thresholds(trials, contrast, by=groups)
    table = threshold_table(found)
    ctx.save_table(table, "thresholds")
    doc.paragraph(
        f"Gain = {contrast.treated} - {contrast.control} on {contrast.axis}, paired by seed and every other axis. "
        "Threshold = between the last swept ratio whose gain has a 95% "
        "CI above zero and the next swept ratio, whose CI first includes zero: the grid resolves no more than this "
        "bracket, and the log midpoint is only its centre on the figure's log axis. The 95% interval repeats the "
        "rule on seed resamples and always holds the bracket (seed noise and grid resolution). Every ratio "
        "resolved: no level-off within the swept range. One sign-flip test over all pairs decides whether there "
        f"is a gain at all. Fewer than {FEW_SEEDS} seeds per ratio: the intervals undercover, and the line says "
        "how many seeds a paired t-test would need (80% power) at the observed paired spread. "
        f"Thesis, by eye: the gain levels off near {FIGURE_4_6_THRESHOLD}."
    )
    doc.table(table, "Threshold per class (and per frozen/unfrozen backbone or plant where the sweep has them)", 4)
    for t in found:
        doc.paragraph(t.describe())
    gains = pl.concat(
        [
            t.curve.with_columns(pl.lit(t.metric).alias("metric"), pl.lit(group_text(t.group)).alias("group"))
            for t in found
        ]
    ).select("metric", "group", RATIO, "pairs", "gain_mean", "gain_std", "gain_lo", "gain_hi", "resolved")
    ctx.save_table(gains, "gain_curve")
    doc.table(gains, f"Gain of {contrast.text()} in test F1 per ratio (mean paired difference over seeds, 95% CI)")
    arm = arm_column(trials, contrast.axis)
    compared = trials.filter(pl.col(arm).cast(pl.String).is_in([contrast.treated, contrast.control]))
    curves = aggregate(with_ratio(compared), [RATIO, arm, *groups], ["f1_minority", "f1_majority"])
    ctx.save_table(curves, "f1_by_ratio")
    titles = ctx.names.titles()
    ctx.save_figure(
        fig.imbalance_figure(curves, found, contrast, arm, groups, title=data.name, titles=titles),
        "imbalance_ratio",
        f"Figure 4.6: test F1 of the {' and '.join(titles[m] for m in ('f1_minority', 'f1_majority'))} against the "
        f"imbalance ratio (minority / majority training images, log axis), {contrast.treated} and "
        f"{contrast.control} (mean over "
        "seeds, 95% bootstrap band"
        + (", one line style per group" if groups else "")
        + "); green, where a threshold lies within the swept range: the bracket of swept ratios holding it "
        "(dark) and its 95% interval (light); grey dashed: the thesis' 0.10.",
    )
    return imbalance_headline(found, thesis=not ctx.names.own)


def imbalance_headline(found: list[Threshold], thesis: bool = True) -> Headline:
    """One sentence per threshold; with too few seeds first the seeds the minority-class threshold needs."""
    primary = [t for t in found if t.metric == found[0].metric]
    needed = most_needed([t.seeds_to_ask for t in primary])
    seeds = SeedCount(min(t.seeds for t in found), "ratio", "to locate a threshold", needed)
    reference = f"; thesis: ~{FIGURE_4_6_THRESHOLD}" if thesis else ""
    return Headline.of(
        "Imbalance threshold", [t.finding() + (reference if t.metric == found[0].metric else "") for t in found], seeds
    )
