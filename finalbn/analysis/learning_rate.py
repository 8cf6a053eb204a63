"""Learning rate x final BN (issue 12 item 3): the final-BN gain per peak learning rate, and what explains it.

Method: per plant x learning rate x arm of the sweep's headline contrast (final
BN and none in the declared sweep), the mean over seeds of each final test metric
with its 95% percentile-bootstrap CI (``stats.aggregate``); the gain per plant x
learning rate is the mean paired difference (treated - control, paired by seed
and every other axis, ``contrasts.paired``) with its bootstrap CI and a sign-flip
p-value (``stats.summarise_differences``). Beside minority F1 the table shows what
tells a threshold shift from better ranking: ROC AUC (threshold-free), the mean
minority probability on majority test images, and the final BN's learned
scale and shift. The ``batch_steps`` section is Figure 4.7's analysis of the
batch-size sweep run at a fixed number of optimizer steps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import polars as pl

from finalbn.analysis.batch import batch_section
from finalbn.analysis.contrasts import NO_CONTRAST, arm_column, arms_of, headline_contrast, paired
from finalbn.analysis.headline import Headline, SeedCount
from finalbn.analysis.sections import SECTIONS, Context, group_text, num
from finalbn.analysis.stats import DEFAULT, Bootstrap, aggregate, summarise_differences
from finalbn.errors import UserError
from finalbn.sweep.spec import Contrast

LR = "train.lr"
# Minority F1 first; then what explains it. Records written before these metrics existed lack them:
# a column that is absent is left out, not an error.
EXPLAINING = (
    "f1_minority",
    "auc",
    "minority_prob_on_majority",
    "minority_prob_on_minority",
    "bn_scale_minority",
    "bn_shift_minority",
    "bn_scale_majority",
    "bn_shift_majority",
    "ece",
    "brier",
)
# The paired gain (treated - control) is shown for these.
GAINS = ("f1_minority", "auc", "minority_prob_on_majority")


def lr_table(
    trials: pl.DataFrame, contrast: Contrast, by: Sequence[str] = (), boot: Bootstrap = DEFAULT
) -> pl.DataFrame:
    """Mean, std and CI of each explaining metric per group x learning rate x arm of ``contrast``, sorted by rate."""
    arm = _check(trials, contrast)
    metrics = [m for m in EXPLAINING if m in trials.columns]
    frame = trials.with_columns(pl.col(LR).cast(pl.Float64), pl.col(arm).cast(pl.String))
    frame = frame.filter(pl.col(arm).is_in([contrast.treated, contrast.control]))
    return aggregate(frame, [*by, LR, arm], metrics, boot).sort([*by, LR, arm])


def gains(trials: pl.DataFrame, contrast: Contrast, by: Sequence[str] = (), boot: Bootstrap = DEFAULT) -> pl.DataFrame:
    """Treated - control per group x learning rate and metric, paired by seed, with CI and sign-flip p."""
    _check(trials, contrast)
    frame = trials.with_columns(pl.col(LR).cast(pl.Float64))
    keys = [*by, LR]
    tables = []
    for metric in (m for m in GAINS if m in frame.columns):
        pairs = paired(frame, metric, contrast, by=keys)
        if pairs.height:
            tables.append(summarise_differences(pairs, keys, boot).with_columns(pl.lit(metric).alias("metric")))
    if not tables:
        raise UserError(
            f"no learning rate has both a {contrast.treated} and a {contrast.control} run of the same seed: "
            "nothing to pair"
        )
    return pl.concat(tables).select("metric", *keys, pl.exclude("metric", *keys)).sort(["metric", *keys])


def compact(table: pl.DataFrame, contrast: Contrast, by: Sequence[str]) -> pl.DataFrame:
    """The report's view of ``lr_table``: F1 with its CI, the other metrics' means. The learning
    rate as text: rounded like the metrics, 1e-4 and 3e-4 would both read 0.000."""
    means = [f"{m}_mean" for m in EXPLAINING[1:] if f"{m}_mean" in table.columns]
    rate = pl.col(LR).cast(pl.String)
    return table.select(
        *by, rate, arm_column(table, contrast.axis), "n", "f1_minority_mean", "f1_minority_lo", "f1_minority_hi", *means
    ).rename({c: c.removesuffix("_mean") for c in means})


def headline(gains: pl.DataFrame, contrast: Contrast, by: Sequence[str]) -> Headline:
    """Per group: the minority-F1 gain at its smallest and largest value over the rates swept; with too
    few seeds first how many the intervals need, and the gains as means only."""
    f1 = gains.filter(pl.col("metric") == "f1_minority")
    seeds = SeedCount(int(f1["pairs"].min()), "learning rate", "for reliable intervals")
    groups = f1.select(by).unique(maintain_order=True).iter_rows(named=True) if by else [{}]
    parts = []
    for group in groups:
        rows = f1.filter(*[pl.col(k) == v for k, v in group.items()]) if group else f1
        low, high = rows.sort("difference_mean").row(0, named=True), rows.sort("difference_mean").row(-1, named=True)
        gain = _mean if seeds.too_few else _gain
        parts.append(
            f"{group_text(group)}: {contrast.treated} - {contrast.control} in minority F1 {gain(low)} at lr "
            f"{low[LR]:g} to {gain(high)} at lr "
            f"{high[LR]:g}"
        )
    return Headline.of("Learning rate x final BN", parts, seeds)


def _mean(row: dict[str, object]) -> str:
    return f"{row['difference_mean']:+.3f}"


def _gain(row: dict[str, object]) -> str:
    return f"{num(row['difference_mean'])} [{num(row['difference_lo'])}, {num(row['difference_hi'])}]"


def _check(trials: pl.DataFrame, contrast: Contrast) -> str:
    """The contrast's label column, once the columns the analysis needs are there."""
    missing = [c for c in (LR, "f1_minority") if c not in trials.columns]
    if missing:
        raise UserError(f"table has no column(s) {', '.join(missing)}: the learning-rate analysis needs them")
    return arm_column(trials, contrast.axis)


# ------------------------------------------------------------------ report


@SECTIONS.register("learning_rate")
def learning_rate_section(ctx: Context) -> Headline:
    data, doc = ctx.data, ctx.doc
    doc.heading("Learning rate x final BN")
    contrast = headline_contrast(data.spec)
    if contrast is None:
        ctx.skip("The learning-rate analysis", NO_CONTRAST)
        return Headline("Learning rate x final BN", (NO_CONTRAST,))
    arms = arms_of(data.trials, data.spec)
    for note in arms.notes():
        doc.note(note)
    by = ctx.groups({LR, contrast.axis})
    table = lr_table(arms.trials, contrast, by)
    ctx.save_table(table, "lr_by_final_bn")
    differences = gains(arms.trials, contrast, by)
    ctx.save_table(differences, "lr_bn_gain")
    doc.paragraph(
        f"Per learning rate and arm ({contrast.treated}, {contrast.control}): the mean over seeds of each final "
        "test metric, minority F1 with its 95% percentile-bootstrap CI. auc is ROC AUC of the minority "
        "probability (threshold-free); "
        "minority_prob_on_majority / _on_minority are the mean minority probability on majority / minority test "
        "images; bn_scale_* / bn_shift_* are the final BN's learned weight and bias (class means). A gain in F1 "
        "with AUC unchanged and the minority probability up on both groups is a threshold shift, not better "
        "ranking. The thesis states no learning rate (fastai v1's default peak is 3e-3) and trains 10 epochs."
    )
    doc.table(compact(table, contrast, by), "Test metrics per learning rate and arm (mean over seeds; F1 95% CI)")
    doc.table(
        differences,
        f"Gain ({contrast.treated} - {contrast.control}, paired by seed) per learning rate: mean, 95% CI, sign-flip p",
        4,
    )
    return headline(differences, contrast, by)


@SECTIONS.register("batch_steps")
def batch_steps_section(ctx: Context) -> Headline:
    """Figure 4.7's batch-size analysis, for a sweep that fixes the optimizer steps instead of the epochs."""
    trials = ctx.data.trials
    steps = sorted(set(trials["train.steps"].drop_nulls().to_list())) if "train.steps" in trials.columns else []
    fixed = f"a fixed {', '.join(str(int(s)) for s in steps)} optimizer steps" if steps else "fixed epochs"
    ctx.doc.paragraph(
        f"Every trial here trains {fixed} whatever its batch size, so a larger batch sees the training set more "
        "often instead of making fewer steps: what is left of Figure 4.7's trend is the batch size's own effect."
    )
    answer = batch_section(ctx)
    return dataclasses.replace(answer, label=f"At {fixed}: {answer.label}")
