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
from finalbn.analysis.contrasts import NO_CONTRAST, arm_column, arm_labels, arms_of, contrasts_of, paired
from finalbn.analysis.headline import Headline, SeedCount
from finalbn.analysis.sections import SECTIONS, Context, num
from finalbn.analysis.stats import DEFAULT, Bootstrap, aggregate
from finalbn.analysis.thesis import TABLE_4_2, TABLE_4_2_ARMS, TABLE_4_6, TABLE_4_6_ARMS, TABLE_4_7, TABLE_4_8
from finalbn.errors import UserError
from finalbn.records.folders import SWEEP_RECORD
from finalbn.sweep.spec import Contrast, SweepSpec

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


def table_4_2(trials: pl.DataFrame, spec: SweepSpec | None, boot: Bootstrap = DEFAULT) -> pl.DataFrame:
    """Headline sweep: test F1 per plant and class of every arm on the headline contrast's axis, then each
    declared contrast's paired difference (the thesis' "BN total improvement" is final_BN - WL)."""
    contrasts = _declared(spec, "Table 4.2 (the headline sweep)")
    _require(trials, list(CLASSES.values()), "Table 4.2 (the headline sweep)")
    arms = arms_of(trials, spec).trials
    names = DataNames.of(trials)
    rows = []
    for plant, ref, frame in _plants(arms, names):
        for cls, metric in CLASSES.items():
            printed = TABLE_4_2.get(ref or "", {}).get(cls)
            thesis = {label: printed[i] for label, i in TABLE_4_2_ARMS.items()} if printed else {}
            rows += _arm_rows(frame, contrasts[0].axis, spec, metric, plant, ref, names.label(cls), thesis, boot)
            rows += _contrast_rows(frame, contrasts, metric, plant, ref, names.label(cls), thesis, 4, boot)
    return _frame(rows, extra={"column": pl.String})


def table_4_6(trials: pl.DataFrame, spec: SweepSpec | None, boot: Bootstrap = DEFAULT) -> pl.DataFrame:
    """BN-removal sweep: every arm on the headline contrast's axis (no final BN, final BN, and the derived
    arm of final BN removed at test) per plant and class, then each declared contrast's paired difference."""
    contrasts = _declared(spec, "Table 4.6 (the bn_removal sweep)")
    _require(trials, list(CLASSES.values()), "Table 4.6 (the bn_removal sweep)")
    arms = arms_of(trials, spec)
    unscored = [label for label, count in arms.dropped.items() if count and arms.trials.height == trials.height]
    if unscored:
        raise UserError(
            f"Table 4.6 needs the derived arm(s) {', '.join(unscored)}, and no trial has their metrics: "
            "rerun the sweep so its trials score them"
        )
    names = DataNames.of(trials)
    rows = []
    for plant, ref, frame in _plants(arms.trials, names):
        for cls, metric in CLASSES.items():
            thesis = {
                label: TABLE_4_6[row][ref][1 if cls == "minority" else 0]
                for label, row in TABLE_4_6_ARMS.items()
                if ref in TABLE_4_6[row]
            }
            axis = contrasts[0].axis
            rows += _arm_rows(frame, axis, spec, metric, plant, ref, names.label(cls), thesis, boot, TABLE_4_6_ARMS)
            rows += _contrast_rows(frame, contrasts, metric, plant, ref, names.label(cls), thesis, 2, boot)
    return _frame(rows, extra={"column": pl.String})


def table_4_7(trials: pl.DataFrame, spec: SweepSpec | None, boot: Bootstrap = DEFAULT) -> pl.DataFrame:
    """MNIST CNN sweep: per-digit test F1 per setting, the headline contrast's control (the thesis' without
    final BN) and treated arm (with)."""
    contrast = _declared(spec, "Table 4.7 (the mnist_cnn sweep)")[0]
    _require(trials, ["axis.setting"], "Table 4.7 (the mnist_cnn sweep)")
    arms = arms_of(trials, spec).trials
    column = arm_column(arms, contrast.axis)
    rows = []
    for setting in arms["axis.setting"].unique(maintain_order=True).to_list():
        frame = arms.filter(pl.col("axis.setting") == setting)
        minority = set(_digits(frame, "data.minority"))
        for digit in _digits(frame, "data.minority") + _digits(frame, "data.majority"):
            metric = f"f1_{digit}"
            if metric not in frame.columns:
                continue
            for index, label in enumerate((contrast.control, contrast.treated)):
                subset = frame.filter(pl.col(column).cast(pl.String) == label)
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


def difference_name(contrast: Contrast) -> str:
    """A contrast's column in the thesis tables: ``final_BN - WL``."""
    return f"{contrast.treated} - {contrast.control}"


def _declared(spec: SweepSpec | None, what: str) -> tuple[Contrast, ...]:
    declared = contrasts_of(spec)
    if not declared:
        raise UserError(f"{what}: {NO_CONTRAST}; pass the sweep's results folder with its {SWEEP_RECORD}")
    return declared


def _arm_rows(
    frame: pl.DataFrame,
    axis: str,
    spec: SweepSpec | None,
    metric: str,
    plant: str,
    ref: str | None,
    cls: str,
    thesis: dict[str, float],
    boot: Bootstrap,
    shown: dict[str, str] | None = None,
) -> list[dict[str, object]]:
    """One cell per arm of ``axis`` present (declared order, derived arms after), named as ``shown`` says."""
    column = arm_column(frame, axis)
    rows = []
    for label in arm_labels(frame, axis, spec):
        cell = aggregate(frame.filter(pl.col(column).cast(pl.String) == label), [], [metric], boot)
        name = (shown or {}).get(label, label)
        rows.append(_row(plant, ref, cls, name, cell, metric, thesis.get(label) if ref else None))
    return rows


def _contrast_rows(
    frame: pl.DataFrame,
    contrasts: tuple[Contrast, ...],
    metric: str,
    plant: str,
    ref: str | None,
    cls: str,
    thesis: dict[str, float],
    digits: int,
    boot: Bootstrap,
) -> list[dict[str, object]]:
    """One cell per declared contrast: treated - control paired by seed and every other axis; the thesis'
    difference of its printed numbers (rounded as printed) where it has both arms."""
    rows = []
    for contrast in contrasts:
        pairs = paired(frame, metric, contrast)
        cell = aggregate(pairs, [], ["difference"], boot)
        known = ref is not None and contrast.treated in thesis and contrast.control in thesis
        expected = round(thesis[contrast.treated] - thesis[contrast.control], digits) if known else None
        rows.append(_row(plant, ref, cls, difference_name(contrast), cell, "difference", expected, pairs.height))
    return rows


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
    if not contrasts_of(ctx.data.spec):
        return _undeclared(ctx, "Table 4.2")
    table = table_4_2(ctx.data.trials, ctx.data.spec)
    _thesis_table(ctx, table, "Table 4.2: plain vs weighted loss vs final BN", "table_4_2", ["plant", "class"])
    return _minority_means(ctx, table, "Table 4.2", "plain 0.294, WL 0.795, final BN 0.956")


@SECTIONS.register("bn_removal")
def bn_removal_section(ctx: Context) -> Headline:
    if not contrasts_of(ctx.data.spec):
        return _undeclared(ctx, "Table 4.6")
    table = table_4_6(ctx.data.trials, ctx.data.spec)
    _thesis_table(ctx, table, "Table 4.6: final BN kept vs removed at test", "table_4_6", ["plant", "class"])
    return _minority_means(ctx, table, "Table 4.6", "0.22, 0.91, 0.83")


@SECTIONS.register("mnist_cnn")
def mnist_cnn_section(ctx: Context) -> Headline:
    if not contrasts_of(ctx.data.spec):
        return _undeclared(ctx, "Table 4.7")
    table = table_4_7(ctx.data.trials, ctx.data.spec)
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


def _undeclared(ctx: Context, what: str) -> Headline:
    ctx.skip(what, NO_CONTRAST)
    return Headline(what, (NO_CONTRAST,))


def _minority_means(ctx: Context, table: pl.DataFrame, label: str, thesis: str) -> Headline:
    """Minority F1 per arm (the table's columns other than contrasts), mean over seeds (and plants); beside the
    thesis' Apple row unless the data is the user's own. With too few seeds per configuration, first that the
    intervals need more."""
    minority = table.filter(pl.col("class").str.ends_with("(minority)"))
    differences = {difference_name(c) for c in contrasts_of(ctx.data.spec)}
    columns = [c for c in minority["column"].unique(maintain_order=True).to_list() if c not in differences]
    values = {c: minority.filter(pl.col("column") == c)["measured"].mean() for c in columns}
    plants = minority["plant"].n_unique()
    over = "seeds and plants" if plants > 1 else "seeds"
    named = ctx.names.name("minority")
    what = f"minority F1{f' ({named})' if named != 'minority' else ''}, mean over {over}"
    if ctx.names.own:
        what = f"minority F1 on {ctx.names.data()}, mean over seeds"
    means = ", ".join(f"{k} {num(v)}" for k, v in values.items())
    reference = "" if ctx.names.own else f" (thesis, Apple: {thesis})"
    return Headline.of(label, [f"{what}: {means}{reference}"], _seeds(ctx))


def _seeds(ctx: Context) -> SeedCount:
    return SeedCount(ctx.seeds, "configuration", "for reliable intervals")
