"""The report parts every sweep gets: final metrics per configuration over seeds, and each declared contrast
paired by seed (per data split), with their intervals."""

from __future__ import annotations

import polars as pl

from finalbn.analysis.contrasts import NO_CONTRAST, arms_of, contrasts_of, paired
from finalbn.analysis.grid import AXIS
from finalbn.analysis.sections import MAX_ROWS, METRICS, Context, num
from finalbn.analysis.stats import aggregate, summarise_differences
from finalbn.analysis.sweep_data import NUISANCE, SweepData
from finalbn.records.folders import TABLES

CONFIG = ("data.", "model.", "train.")


def seed_aggregation(ctx: Context) -> None:
    data = ctx.data
    metrics = [m for m in METRICS if m in data.trials.columns]
    keys = data.scientific_axes()
    table = _in_label_order(aggregate(data.trials, keys, metrics), data, keys)
    ctx.save_table(table, "seed_aggregation")
    display = table.select(*[pl.col(k).alias(k.removeprefix(AXIS)) for k in keys], "n").with_columns(
        [_summaries(table, m) for m in metrics]
    )
    ctx.doc.heading("Per configuration over seeds")
    ctx.doc.paragraph("Each cell: mean ± std [95% percentile-bootstrap CI of the mean] over the configuration's runs.")
    if display.height > MAX_ROWS:
        shown = f"the first {MAX_ROWS} shown; all in {TABLES}/seed_aggregation.csv"
        ctx.doc.note(f"{display.height} configurations: {shown}")
    ctx.doc.table(display.head(MAX_ROWS), "Final test metrics per configuration")


def paired_sections(ctx: Context) -> None:
    """Every declared contrast, treated - control, per seed and per data split (validation, test), with CIs.

    Pairs are runs equal in every other axis and in the seeds (``contrasts.paired``); the differences are
    summarised per other scientific axis (the ratio, the plant). A derived arm's runs are its source's read
    under its prefix; the validation split has no derived metrics, so derived arms pair on test only.
    """
    declared = contrasts_of(ctx.data.spec)
    if not declared:
        ctx.skip("Paired contrasts", NO_CONTRAST)
        return
    frames = []
    for split, frame in split_tables(ctx.data).items():
        arms = arms_of(frame, ctx.data.spec)
        if split == "test":
            for note in arms.notes():
                ctx.doc.note(note)
        for contrast in declared:
            by = ctx.groups({contrast.axis})
            for metric in ("f1_minority", "f1_majority"):
                if metric in arms.trials.columns:
                    pairs = paired(arms.trials, metric, contrast, by=by)
                    frames.append(
                        pairs.with_columns(
                            pl.lit(contrast.text()).alias("contrast"),
                            pl.lit(split).alias("split"),
                            pl.lit(metric).alias("metric"),
                        )
                    )
    pairs = pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()
    if pairs.height == 0:
        ctx.skip("Paired contrasts", "no run of a declared contrast has a partner at equal settings and seed")
        return
    ctx.save_table(pairs, "paired_differences")
    by = [c for c in ctx.groups(set()) if c in pairs.columns]
    keys = ["contrast", "metric", "split", *by]
    summary = summarise_differences(pairs, keys).sort(keys)
    ctx.doc.heading("Declared contrasts, paired by seed")
    ctx.doc.paragraph(
        "Pairs: runs equal in every other axis and in the seed, one of each arm; the difference is treated minus "
        "control. Validation numbers are the last epoch's."
    )
    ctx.doc.table(summary, "Mean paired difference with 95% CI", 4)
    if pairs.height <= MAX_ROWS:
        seeds = [c for c in NUISANCE if c in pairs.columns]
        shown = pairs.select(*keys, *seeds, "treated", "control", "difference")
        ctx.doc.table(shown.sort([*keys, *seeds]), "Per seed")
    else:
        ctx.doc.note(f"{pairs.height} per-seed pairs: see {TABLES}/paired_differences.csv")


def split_tables(data: SweepData) -> dict[str, pl.DataFrame]:
    """Final metrics per trial for each data split: ``test`` from trials, ``val`` from the last epoch."""
    splits = {"test": data.trials}
    if data.epochs is not None and "val_f1_minority" in data.epochs.columns:
        last = data.epochs.sort("epoch").group_by("trial_id", maintain_order=True).last()
        val = last.select(
            "trial_id", *[pl.col(c).alias(c.removeprefix("val_")) for c in last.columns if c.startswith("val_")]
        )
        # The settings only: the test metrics, plain or under a derived arm's prefix, are not the validation's.
        keep = ["trial_id", *(c for c in data.trials.columns if c.startswith((AXIS, *CONFIG)))]
        splits["val"] = data.trials.select(keep).join(val, on="trial_id", how="inner")
    return splits


def fewest_runs(data: SweepData) -> int:
    """Runs of the configuration with the fewest: what the intervals rest on."""
    keys = data.scientific_axes()
    if not keys:
        return data.trials.height
    return int(data.trials.group_by(keys).len()["len"].min())


def _summaries(table: pl.DataFrame, metric: str) -> pl.Series:
    """``mean ± std [lo, hi]`` per row, three decimals, "-" where a value is undefined."""
    columns = [table[f"{metric}_{part}"].to_list() for part in ("mean", "std", "lo", "hi")]
    text = [f"{num(mean)} ± {num(std)} [{num(lo)}, {num(hi)}]" for mean, std, lo, hi in zip(*columns, strict=True)]
    return pl.Series(metric, text, dtype=pl.String)


def _in_label_order(table: pl.DataFrame, data: SweepData, keys: list[str]) -> pl.DataFrame:
    """Rows sorted by each key, axis labels in declared (or numeric) order rather than as text."""
    ranks = []
    for key in keys:
        if key.startswith(AXIS):
            order = data.label_order(key)
            ranks.append(pl.col(key).replace_strict(order, list(range(len(order))), default=len(order)))
        else:
            ranks.append(pl.col(key))
    return table.sort(ranks) if ranks else table
