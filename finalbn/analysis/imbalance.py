"""The report section of an imbalance-ratio sweep (Figure 4.6): the threshold per class, with its CI.

The threshold itself is computed in ``threshold``; this is how the report
shows it: the table, the gain curve, the F1 curves and the figure.
"""

from __future__ import annotations

import polars as pl

from finalbn.analysis import figures as fig
from finalbn.analysis.sections import SECTIONS, Context, group_text
from finalbn.analysis.stats import aggregate
from finalbn.analysis.thesis import FIGURE_4_6_THRESHOLD
from finalbn.analysis.threshold import FRACTION, RATIO, threshold_table, thresholds, with_ratio


@SECTIONS.register("imbalance_ratio")
def imbalance_section(ctx: Context) -> str:
    data, doc = ctx.data, ctx.doc
    doc.heading("Imbalance threshold (Figure 4.6)")
    groups = ctx.groups({"data.train_minority", "model.final_norm"})
    found = thresholds(data.trials, by=groups)
    table = threshold_table(found)
    ctx.save_table(table, "thresholds")
    doc.paragraph(
        f"Threshold = the minority ratio where the final-BN gain (paired by seed: final BN - none) falls below "
        f"{FRACTION:.0%} of its peak for the last time, linearly interpolated between swept ratios; 95% CI from "
        f"resampling seeds. Cross-check (zero_tail): smallest ratio from which on the pooled gain's CI includes zero. "
        f"Thesis, by eye: the gain levels off near {FIGURE_4_6_THRESHOLD}."
    )
    doc.table(table, "Threshold per class (and per frozen/unfrozen backbone or plant where the sweep has them)", 4)
    gains = pl.concat(
        [
            t.curve.with_columns(pl.lit(t.metric).alias("metric"), pl.lit(group_text(t.group)).alias("group"))
            for t in found
        ]
    ).select("metric", "group", RATIO, "pairs", "gain_mean", "gain_std", "gain_lo", "gain_hi")
    ctx.save_table(gains, "gain_curve")
    doc.table(gains, "Final-BN gain in test F1 per ratio (mean over seeds of the paired difference, 95% CI)")
    curves = aggregate(with_ratio(data.trials), [RATIO, "model.final_norm", *groups], ["f1_minority", "f1_majority"])
    ctx.save_table(curves, "f1_by_ratio")
    ctx.save_figure(
        fig.imbalance_figure(curves, found, groups, title=data.name),
        "imbalance_ratio",
        "Figure 4.6: test F1 against the imbalance ratio with and without final BN (mean over seeds, 95% "
        "bootstrap band); green: the threshold found and its CI; grey dashed: the thesis' 0.10.",
    )
    return "Imbalance threshold: " + "; ".join(t.describe() for t in found) + f" (thesis: ~{FIGURE_4_6_THRESHOLD})"
