"""Tables 4.2, 4.6, 4.7 and 4.8 regenerated from their sweeps, the thesis' numbers beside them.

Each function returns a long table: one row per cell of the thesis' table,
with the measured mean over seeds, its bootstrap CI, the run count, the
thesis' value and ``difference`` = measured - thesis. Where the sweep ran on
other data than the thesis' table (the laptop presets run on MNIST where the
thesis used PlantVillage), ``thesis_ref`` says which thesis row it is
compared with. The report sections of those sweeps (headline, bn_removal,
mnist_cnn, mnist_fc) are at the end.
"""

from __future__ import annotations

import polars as pl

from finalbn.analysis.classes import DataNames, Role
from finalbn.analysis.headline import Headline, SeedCount
from finalbn.analysis.sections import SECTIONS, Context, num
from finalbn.analysis.stats import DEFAULT, Bootstrap, aggregate, paired_differences
from finalbn.analysis.thesis import TABLE_4_2, TABLE_4_2_COLUMNS, TABLE_4_6, TABLE_4_7, TABLE_4_8
from finalbn.errors import UserError

PLANT = "data.plant"
CLASSES: dict[Role, str] = {"minority": "f1_minority", "majority": "f1_majority"}
# Reference plant for sweeps not run on PlantVillage: the thesis' headline plant.
REFERENCE_PLANT = "Apple"
SCHEMA = {
    "measured": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "thesis": pl.Float64,
    "difference": pl.Float64,
}


def table_4_2(trials: pl.DataFrame, boot: Bootstrap = DEFAULT) -> pl.DataFrame:
    """Headline sweep: test F1 per plant and class for plain, WL, final BN, and final BN - WL."""
    _require(trials, ["axis.variant", *CLASSES.values()], "Table 4.2 (the headline sweep)")
    names = DataNames.of(trials)
    rows = []
    for plant, ref, frame in _plants(trials, names):
        for cls, metric in CLASSES.items():
            thesis = TABLE_4_2.get(ref, {}).get(cls)
            label = names.label(cls)
            cells = aggregate(frame, ["axis.variant"], [metric], boot)
            for index, variant in enumerate(TABLE_4_2_COLUMNS[:3]):
                cell = cells.filter(pl.col("axis.variant") == variant)
                rows.append(_row(plant, ref, label, variant, cell, metric, thesis[index] if thesis else None))
            # The thesis' "BN total improvement" is final BN minus WL; paired by seed here.
            pairs = paired_differences(frame, metric, "axis.variant", "final_BN", "WL", pair_on=_seed(frame))
            cell = aggregate(pairs, [], ["difference"], boot)
            rows.append(
                _row(plant, ref, label, "improvement", cell, "difference", thesis[3] if thesis else None, pairs.height)
            )
    return _frame(rows, extra={"column": pl.String})


def table_4_6(trials: pl.DataFrame, boot: Bootstrap = DEFAULT) -> pl.DataFrame:
    """BN-removal sweep: no final BN, final BN, and final BN removed at test, per plant and class."""
    _require(trials, ["model.final_norm", *CLASSES.values()], "Table 4.6 (the bn_removal sweep)")
    if "nobn_f1_minority" not in trials.columns:
        raise UserError(
            "Table 4.6 needs nobn_f1_minority (final-BN trials scored with the BN removed): "
            "the sweep has no final-BN trial; rerun it with model.final_norm bn"
        )
    names = DataNames.of(trials)
    rows = []
    settings = (("no final BN", "none", ""), ("final BN", "bn", ""), ("final BN removed at test", "bn", "nobn_"))
    for plant, ref, frame in _plants(trials, names):
        for label, norm, prefix in settings:
            subset = frame.filter(pl.col("model.final_norm") == norm)
            for cls, metric in CLASSES.items():
                cell = aggregate(subset, [], [prefix + metric], boot) if subset.height else pl.DataFrame()
                healthy, unhealthy = TABLE_4_6[label].get(ref, (None, None)) if ref else (None, None)
                thesis = unhealthy if cls == "minority" else healthy
                rows.append(_row(plant, ref, names.label(cls), label, cell, prefix + metric, thesis))
    return _frame(rows, extra={"column": pl.String})


def table_4_7(trials: pl.DataFrame, boot: Bootstrap = DEFAULT) -> pl.DataFrame:
    """MNIST CNN sweep: per-digit test F1 per setting, without and with final BN."""
    _require(trials, ["axis.setting", "model.final_norm"], "Table 4.7 (the mnist_cnn sweep)")
    rows = []
    for setting in trials["axis.setting"].unique(maintain_order=True).to_list():
        frame = trials.filter(pl.col("axis.setting") == setting)
        minority = set(_digits(frame, "data.minority"))
        for digit in _digits(frame, "data.minority") + _digits(frame, "data.majority"):
            metric = f"f1_{digit}"
            if metric not in frame.columns:
                continue
            for index, (norm, label) in enumerate((("none", "without final BN"), ("bn", "with final BN"))):
                subset = frame.filter(pl.col("model.final_norm") == norm)
                cell = aggregate(subset, [], [metric], boot) if subset.height else pl.DataFrame()
                thesis = TABLE_4_7.get(setting, {}).get(digit)
                row = _row(
                    setting,
                    setting,
                    f"{digit}{' (minority)' if digit in minority else ''}",
                    label,
                    cell,
                    metric,
                    thesis[index] if thesis else None,
                )
                rows.append(row)
    return _frame(rows, extra={"column": pl.String}).rename({"plant": "setting"}).drop("thesis_ref")


def table_4_8(trials: pl.DataFrame, boot: Bootstrap = DEFAULT) -> pl.DataFrame:
    """MNIST FC sweep: test F1 of class 3 (minority) and 8 per row of output/loss/first BN/final BN."""
    _require(trials, ["axis.row"], "Table 4.8 (the mnist_fc sweep)")
    minority = _digits(trials, "data.minority")
    majority = _digits(trials, "data.majority")
    rows = []
    for label in trials["axis.row"].unique(maintain_order=True).to_list():
        frame = trials.filter(pl.col("axis.row") == label)
        thesis = TABLE_4_8.get(label)
        for index, digit in enumerate(minority[:1] + majority[:1]):
            metric = f"f1_{digit}"
            if metric not in frame.columns:
                continue
            cell = aggregate(frame, [], [metric], boot)
            cls = f"class {digit}{' (minority)' if index == 0 else ''}"
            rows.append(_row(label, label, cls, label, cell, metric, thesis[index] if thesis else None))
    table = _frame(rows, extra={"column": pl.String})
    return table.rename({"plant": "row"}).drop("thesis_ref", "column")


def wide(table: pl.DataFrame, index: list[str], on: str = "column", thesis: bool = True) -> pl.DataFrame:
    """Display form: per value of ``on``, its measured mean, the thesis value and the difference side by side
    (``thesis`` False: the measured means alone)."""
    order = table[on].unique(maintain_order=True).to_list()
    if not thesis:
        return table.pivot(on=on, index=index, values="measured").select(*index, *order)
    values = table.select(*index, on, pl.col("measured"), pl.col("thesis"), pl.col("difference").alias("Δ"))
    out = values.pivot(on=on, index=index, values=["measured", "thesis", "Δ"], separator="|")
    columns = [f"{kind}|{value}" for value in order for kind in ("measured", "thesis", "Δ")]
    renamed = {c: _display(c) for c in columns}
    return out.select(*index, *columns).rename(renamed)


def class_names(trials: pl.DataFrame, require_metrics: bool = True) -> tuple[list[str], list[str]]:
    """(minority, majority) class names as the data config names them; with ``require_metrics``
    only those with an ``f1_<name>`` column."""
    source = trials["data.source"][0] if "data.source" in trials.columns else None
    if source == "plantvillage":
        minority, majority = ["unhealthy"], ["healthy"]
    else:
        minority, majority = _digits(trials, "data.minority"), _digits(trials, "data.majority")
        if "data.pool_minority" in trials.columns and trials["data.pool_minority"][0]:
            minority = ["minority"]
    if not require_metrics:
        return minority, majority
    return [m for m in minority if f"f1_{m}" in trials.columns], [m for m in majority if f"f1_{m}" in trials.columns]


def plant_column(trials: pl.DataFrame) -> str | None:
    """``data.plant`` when the data is PlantVillage; other sources keep the field at its unused default."""
    if PLANT not in trials.columns:
        return None
    if "data.source" in trials.columns and set(trials["data.source"].unique().to_list()) != {"plantvillage"}:
        return None
    return PLANT


def _display(column: str) -> str:
    kind, value = column.split("|", 1)
    return value if kind == "measured" else f"{value} ({'thesis' if kind == 'thesis' else 'Δ'})"


def _plants(trials: pl.DataFrame, names: DataNames) -> list[tuple[str, str | None, pl.DataFrame]]:
    """(plant shown, thesis plant compared with, its trials). The user's own class folders are compared
    with no thesis row: their data is not the thesis'."""
    column = plant_column(trials)
    if names.own:
        return [(names.data(), None, trials)]
    if column is None:
        return [(f"{names.source or 'other data'} (vs thesis {REFERENCE_PLANT})", REFERENCE_PLANT, trials)]
    return [
        (plant, plant, trials.filter(pl.col(column) == plant))
        for plant in trials[column].unique(maintain_order=True).to_list()
    ]


def _row(
    plant: str,
    ref: str | None,
    cls: str,
    column: str,
    cell: pl.DataFrame,
    metric: str,
    thesis: float | None,
    runs: int | None = None,
) -> dict[str, object]:
    measured = cell[f"{metric}_mean"][0] if cell.height else None
    measured = None if measured is None or measured != measured else float(measured)
    return {
        "plant": plant,
        "thesis_ref": ref,
        "class": cls,
        "column": column,
        "measured": measured,
        "ci_low": cell[f"{metric}_lo"][0] if cell.height else None,
        "ci_high": cell[f"{metric}_hi"][0] if cell.height else None,
        "runs": runs if runs is not None else (int(cell["n"][0]) if cell.height else 0),
        "thesis": thesis,
        "difference": measured - thesis if measured is not None and thesis is not None else None,
    }


def _frame(rows: list[dict[str, object]], extra: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema_overrides={**SCHEMA, **extra}).with_columns(
        pl.col("ci_low", "ci_high").fill_nan(None)
    )


def _seed(frame: pl.DataFrame) -> list[str]:
    return [c for c in ("data.plant", "train.seed") if c in frame.columns]


def _digits(frame: pl.DataFrame, column: str) -> list[str]:
    if column not in frame.columns:
        return []
    return [d for d in str(frame[column][0]).split(",") if d]


def _require(trials: pl.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in trials.columns]
    if missing:
        raise UserError(f"{what} needs column(s) {', '.join(missing)}: pass that sweep's results folder")


# ------------------------------------------------------------------ report


@SECTIONS.register("headline")
def headline_section(ctx: Context) -> Headline:
    table = table_4_2(ctx.data.trials)
    _thesis_table(ctx, table, "Table 4.2: plain vs weighted loss vs final BN", "table_4_2", ["plant", "class"])
    return _minority_means(ctx, table, ("plain", "WL", "final_BN"), "plain 0.294, WL 0.795, final BN 0.956")


@SECTIONS.register("bn_removal")
def bn_removal_section(ctx: Context) -> Headline:
    table = table_4_6(ctx.data.trials)
    _thesis_table(ctx, table, "Table 4.6: final BN kept vs removed at test", "table_4_6", ["plant", "class"])
    labels = ("no final BN", "final BN", "final BN removed at test")
    return _minority_means(ctx, table, labels, "0.22, 0.91, 0.83")


@SECTIONS.register("mnist_cnn")
def mnist_cnn_section(ctx: Context) -> Headline:
    table = table_4_7(ctx.data.trials)
    _thesis_table(ctx, table, "Table 4.7: MNIST digit settings, simple CNN", "table_4_7", ["setting", "class"])
    first = table.filter(pl.col("class").str.contains("minority")).head(2)
    means = ", ".join(
        f"{r['column']} {num(r['measured'])} (thesis {num(r['thesis'])})" for r in first.iter_rows(named=True)
    )
    return Headline.of("Table 4.7", [f"first setting's minority F1, mean over seeds: {means}"], _seeds(ctx))


@SECTIONS.register("mnist_fc")
def mnist_fc_section(ctx: Context) -> Headline:
    table = table_4_8(ctx.data.trials)
    ctx.doc.heading("Table 4.8: one hidden layer of 128, output x loss x first BN x final BN")
    ctx.save_table(table, "table_4_8")
    wide = table.select("row", "class", "measured", "thesis", "difference", "ci_low", "ci_high", "runs")
    ctx.doc.table(wide, "Test F1 per row, mean over seeds; thesis value and difference = measured - thesis", 4)
    minority = table.filter(pl.col("class").str.contains("minority")).sort("measured", descending=True, nulls_last=True)
    best = minority.row(0, named=True)
    finding = f"best row by minority F1: {best['row']} {num(best['measured'])} (thesis best: softmax-cce-finalbn 0.88)"
    return Headline.of("Table 4.8", [finding], _seeds(ctx))


def _thesis_table(ctx: Context, table: pl.DataFrame, heading: str, name: str, keys: list[str]) -> None:
    """A regenerated thesis table: the wide view beside the thesis, then the long form with CIs. The user's
    own data has no thesis row to stand beside: its columns are left out rather than shown empty."""
    ctx.doc.heading(heading)
    ctx.save_table(table, name)
    if table["thesis"].null_count() == table.height:
        ctx.doc.table(wide(table, keys, thesis=False), f"Test F1, mean over seeds, on {ctx.names.data()}", 4)
        shown = table.drop("thesis", "difference", "thesis_ref", strict=False)
        ctx.doc.table(shown, "Long form with 95% CIs and run counts", 4)
        return
    ctx.doc.table(wide(table, keys), "Test F1, mean over seeds; thesis value and Δ = measured - thesis", 4)
    ctx.doc.table(table, "Long form with 95% CIs and run counts", 4)


def _minority_means(ctx: Context, table: pl.DataFrame, columns: tuple[str, ...], thesis: str) -> Headline:
    """Minority F1 per column, mean over seeds (and plants); beside the thesis' Apple row unless the data
    is the user's own. With too few seeds per configuration, first that the intervals need more."""
    minority = table.filter(pl.col("class").str.ends_with("(minority)"))
    values = {c: minority.filter(pl.col("column") == c)["measured"].mean() for c in columns}
    plants = minority["plant"].n_unique()
    over = "seeds and plants" if plants > 1 else "seeds"
    named = ctx.names.name("minority")
    what = f"minority F1{f' ({named})' if named != 'minority' else ''}, mean over {over}"
    if ctx.names.own:
        what = f"minority F1 on {ctx.names.data()}, mean over seeds"
    means = ", ".join(f"{k} {num(v)}" for k, v in values.items())
    reference = "" if ctx.names.own else f" (thesis, Apple: {thesis})"
    return Headline.of("Table " + ("4.2" if "WL" in columns else "4.6"), [f"{what}: {means}{reference}"], _seeds(ctx))


def _seeds(ctx: Context) -> SeedCount:
    return SeedCount(ctx.seeds, "configuration", "for reliable intervals")
