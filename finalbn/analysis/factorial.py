"""The 2^k factorial over BN, WL, DA, MX, UF, WD: effects, best and worst configurations, gain factors.

Effects are those of the classical two-level design: code each factor +1
(option on, the thesis' check mark) or -1 (off) and fit, by least squares,

    F1 = b0 [+ plant] + sum_i b_i x_i + sum_{i<j} b_ij x_i x_j + error.

A main effect is 2 b_i, the mean F1 with the option on minus the mean with
it off over all other settings; a two-way interaction is 2 b_ij, half the
difference between the effect of i with j on and with j off. With one run
per configuration (the thesis' design) the error is estimated from the
three-way and higher interactions the model leaves out, the textbook choice
for an unreplicated factorial; repeated seeds add to it. Intervals are
t-intervals on that error (residual degrees of freedom shown). "Pooled" fits
all plants at once with a plant block term; per-plant fits use one plant.
``factorial_section`` is the report's section for a factorial sweep.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import polars as pl
from scipy import stats as scipy_stats

from finalbn.analysis import figures as fig
from finalbn.analysis.classes import DataNames
from finalbn.analysis.headline import Headline
from finalbn.analysis.sections import SECTIONS, Context
from finalbn.analysis.tables import PLANT, class_names, plant_column
from finalbn.analysis.thesis import FIGURE_4_5_BN, TABLE_4_3, TABLE_4_4
from finalbn.errors import UserError
from finalbn.sweep.experiments import FACTORS

POOLED = "pooled"


def factor_codes(trials: pl.DataFrame) -> pl.DataFrame:
    """Adds ``code.<factor>`` (+1 on, -1 off, null for neither level), ``config_id`` and ``config``.

    ``config_id`` is the thesis' Config Id (the index of the configuration in
    the 2^6 grid with "on" first: 31 = BN alone, 63 = nothing); null when a
    held factor sits at a value that is neither of its two levels.
    """
    codes = []
    for name, (column, on, off) in FACTORS.items():
        if column not in trials.columns:
            raise UserError(f"table has no column {column!r} (factor {name}): is it a factorial sweep table?")
        value = pl.col(column)
        codes.append(
            pl.when(_equals(value, on)).then(1).when(_equals(value, off)).then(-1).otherwise(None).alias(f"code.{name}")
        )
    frame = trials.with_columns(codes)
    # Bit 5 - i is 0 when factor i is on: the grid lists "on" first.
    bits = [((1 - pl.col(f"code.{name}")) // 2) * (2 ** (5 - i)) for i, name in enumerate(FACTORS)]
    defined = pl.all_horizontal([pl.col(f"code.{n}").is_not_null() for n in FACTORS])
    on = [pl.when(pl.col(f"code.{n}") == 1).then(pl.lit(n)).otherwise(None) for n in FACTORS]
    label = pl.concat_str(on, separator="+", ignore_nulls=True)
    return frame.with_columns(
        pl.when(defined).then(pl.sum_horizontal(bits)).otherwise(None).cast(pl.Int64).alias("config_id"),
        pl.when(label == "").then(pl.lit("none")).otherwise(label).alias("config"),
    )


def config_label(config_id: int) -> str:
    """The options a thesis Config Id turns on, e.g. 29 -> "BN+UF" (bit 5 - i clear = option i on)."""
    on = [name for i, name in enumerate(FACTORS) if not config_id & (1 << (5 - i))]
    return "+".join(on) or "none"


def thesis_table_4_4() -> pl.DataFrame:
    """The thesis' Table 4.4 with each Config Id spelled out, for reference next to a measured ranking."""
    rows = [
        {"config_id": k, "config": config_label(k), "Apple": v[0], "Pepper": v[1], "Tomato": v[2], "Average": v[3]}
        for k, v in TABLE_4_4.items()
    ]
    return pl.DataFrame(rows)


def studied_factors(coded: pl.DataFrame) -> list[str]:
    """Factors present at both levels."""
    return [n for n in FACTORS if set(coded[f"code.{n}"].drop_nulls().unique().to_list()) == {-1, 1}]


def effects(
    trials: pl.DataFrame,
    metric: str = "f1_minority",
    interactions: bool = True,
    level: float = 0.95,
) -> pl.DataFrame:
    """Main effects and two-way interactions with CIs, per plant and pooled over plants.

    Columns: scope (plant or "pooled"), term ("BN", "BN x WL"), estimate, ci_low, ci_high, se, df, runs.
    """
    coded = factor_codes(trials)
    factors = studied_factors(coded)
    if not factors:
        raise UserError("no factor of BN, WL, DA, MX, UF, WD was run at both levels: is it a factorial sweep?")
    column = plant_column(coded)
    plants = coded[column].unique(maintain_order=True).to_list() if column else [None]
    scopes: list[tuple[str, pl.DataFrame]] = [
        (str(p) if p is not None else "all", coded.filter(pl.col(PLANT) == p) if p is not None else coded)
        for p in plants
    ]
    if len(plants) > 1:
        scopes.append((POOLED, coded))
    frames = [
        _fit(frame, scope, factors, metric, interactions, level, blocks=scope == POOLED) for scope, frame in scopes
    ]
    return pl.concat(frames)


def _fit(
    frame: pl.DataFrame, scope: str, factors: list[str], metric: str, interactions: bool, level: float, blocks: bool
) -> pl.DataFrame:
    frame = frame.filter(pl.all_horizontal([pl.col(f"code.{n}").is_not_null() for n in factors]))
    frame = frame.filter(pl.col(metric).is_not_null() & pl.col(metric).is_not_nan())
    y = frame[metric].cast(pl.Float64).to_numpy()
    terms = [(n,) for n in factors]
    if interactions:
        terms += list(itertools.combinations(factors, 2))
    design, names = _design(frame, terms, blocks)
    if np.linalg.matrix_rank(design) < design.shape[1] and interactions:
        # A partial grid can leave interactions inestimable; main effects may still be.
        return _fit(frame, scope, factors, metric, False, level, blocks)
    beta, _, rank, _ = np.linalg.lstsq(design, y, rcond=None)
    df = len(y) - rank
    residual = y - design @ beta
    if df > 0 and rank == design.shape[1]:
        sigma2 = float(residual @ residual) / df
        cov = sigma2 * np.linalg.inv(design.T @ design)
        se = 2 * np.sqrt(np.clip(np.diag(cov), 0, None))
        quantile = float(scipy_stats.t.ppf(0.5 + level / 2, df))
    else:
        se = np.full(design.shape[1], np.nan)
        quantile = float("nan")
    rows = []
    for index, name in enumerate(names):
        if name in ("intercept",) or name.startswith("plant:"):
            continue
        estimate = 2 * float(beta[index])
        rows.append(
            {
                "scope": scope,
                "term": name,
                "estimate": estimate,
                "ci_low": estimate - quantile * float(se[index]),
                "ci_high": estimate + quantile * float(se[index]),
                "se": float(se[index]),
                "df": int(df),
                "runs": len(y),
            }
        )
    return pl.DataFrame(rows, schema_overrides={"se": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64})


def _design(frame: pl.DataFrame, terms: list[tuple[str, ...]], blocks: bool) -> tuple[np.ndarray, list[str]]:
    columns = [np.ones(frame.height)]
    names = ["intercept"]
    if blocks and PLANT in frame.columns:
        for plant in frame[PLANT].unique(maintain_order=True).to_list()[1:]:
            columns.append((frame[PLANT] == plant).cast(pl.Float64).to_numpy())
            names.append(f"plant:{plant}")
    for term in terms:
        product = np.ones(frame.height)
        for name in term:
            product = product * frame[f"code.{name}"].cast(pl.Float64).to_numpy()
        columns.append(product)
        names.append(" x ".join(term))
    return np.column_stack(columns), names


def config_means(trials: pl.DataFrame, metric: str = "f1_minority") -> pl.DataFrame:
    """Mean ``metric`` per configuration, one column per plant and their ``Average`` (Table 4.4's layout)."""
    coded = factor_codes(trials)
    keys = ["config_id", "config", *[f"code.{n}" for n in FACTORS]]
    plant = plant_column(coded)
    plant = plant if plant and coded[plant].n_unique() > 1 else None
    if plant is None:
        table = coded.group_by(keys).agg(pl.col(metric).mean().alias("Average"), pl.len().alias("runs"))
    else:
        means = coded.group_by([*keys, plant]).agg(pl.col(metric).mean())
        plants = coded[plant].unique(maintain_order=True).to_list()
        table = means.pivot(on=plant, index=keys, values=metric)
        table = table.select(*keys, *plants).with_columns(pl.mean_horizontal(plants).alias("Average"))
    marks = [pl.when(pl.col(f"code.{n}") == 1).then(pl.lit("✓")).otherwise(pl.lit("")).alias(n) for n in FACTORS]
    thesis = pl.col("config_id").replace_strict(
        {k: v[3] for k, v in TABLE_4_4.items()}, default=None, return_dtype=pl.Float64
    )
    return table.with_columns(*marks, thesis.alias("thesis Average")).drop([f"code.{n}" for n in FACTORS])


def best_and_worst(trials: pl.DataFrame, metric: str = "f1_minority", count: int = 3) -> pl.DataFrame:
    """The ``count`` best and worst configurations by average ``metric`` over plants (Table 4.4)."""
    table = config_means(trials, metric).sort("Average", descending=True, nulls_last=True)
    count = min(count, table.height // 2) if table.height >= 2 else table.height
    best = table.head(count).with_columns(pl.lit("best").alias("rank"))
    worst = table.tail(count).with_columns(pl.lit("worst").alias("rank"))
    return pl.concat([best, worst]).select("rank", pl.all().exclude("rank"))


def gain_factors(trials: pl.DataFrame, metrics: Sequence[str] = ("f1_minority", "f1_majority")) -> pl.DataFrame:
    """Figure 4.5: (F1 with one option on - F1 with none) / F1 with none, per option and class.

    "None" is every studied factor off (held ones at their held value). The
    baseline and option means are over plants and seeds; a baseline of 0 gives
    no finite factor (null).
    """
    coded = factor_codes(trials)
    factors = studied_factors(coded)
    off = [pl.col(f"code.{n}") == -1 for n in factors]
    baseline = coded.filter(pl.all_horizontal(off)) if off else coded.clear()
    rows = []
    for name in factors:
        only = [pl.col(f"code.{n}") == (1 if n == name else -1) for n in factors]
        option = coded.filter(pl.all_horizontal(only))
        for metric in metrics:
            base, value = _mean(baseline, metric), _mean(option, metric)
            factor = (value - base) / base if base is not None and value is not None and base > 0 else None
            rows.append(
                {"option": name, "metric": metric, "baseline": base, "with_option": value, "gain_factor": factor}
            )
    return pl.DataFrame(
        rows, schema_overrides={"baseline": pl.Float64, "with_option": pl.Float64, "gain_factor": pl.Float64}
    )


def _mean(frame: pl.DataFrame, metric: str) -> float | None:
    if frame.height == 0:
        return None
    value = frame[metric].cast(pl.Float64).mean()
    return float(value) if value is not None else None


def _equals(column: pl.Expr, value: object) -> pl.Expr:
    # Floats (mixup alpha, weight decay) are compared with a tolerance; text as text.
    if isinstance(value, bool):
        return column.cast(pl.Boolean) == value
    if isinstance(value, float):
        return (column.cast(pl.Float64) - value).abs() < 1e-12
    return column.cast(pl.String) == str(value)


def table_4_3(trials: pl.DataFrame) -> pl.DataFrame | None:
    """Top three configurations per class on the first plant: precision, recall, F1, and the thesis' rows;
    None when the table lacks the per-class columns."""
    plant = plant_column(trials)
    frame = trials.filter(pl.col(plant) == trials[plant][0]) if plant else trials
    minority, majority = class_names(frame)
    if not minority or not majority:
        return None
    coded = factor_codes(frame)
    parts = []
    for role, name in (("minority", minority[0]), ("majority", majority[0])):
        columns = [f"precision_{name}", f"recall_{name}", f"f1_{name}"]
        if any(c not in coded.columns for c in columns):
            return None
        means = coded.group_by("config_id", "config").agg(pl.col(columns).mean()).sort(columns[2], descending=True)
        top = means.head(3).with_row_index("rank", offset=1)
        thesis = TABLE_4_3[role][: top.height]
        top = top.with_columns(
            pl.lit(DataNames.of(frame).label(role)).alias("class"),
            pl.Series("thesis Config Id", [r[0] for r in thesis]),
            pl.Series("thesis config", [config_label(r[0]) for r in thesis]),
            pl.Series("thesis F1", [r[3] for r in thesis]),
        )
        parts.append(
            top.select(
                "class",
                "rank",
                "config_id",
                "config",
                pl.col(columns[0]).alias("precision"),
                pl.col(columns[1]).alias("recall"),
                pl.col(columns[2]).alias("F1"),
                "thesis Config Id",
                "thesis config",
                "thesis F1",
            )
        )
    return pl.concat(parts)


# ------------------------------------------------------------------ report


@SECTIONS.register("factorial")
def factorial_section(ctx: Context) -> Headline:
    """Tables 4.3-4.4 and Figure 4.5: effects with CIs, the ranking, the gain factors."""
    data, doc = ctx.data, ctx.doc
    trials = data.trials
    doc.heading("Factorial effects on minority F1 (Tables 4.3-4.4, Figure 4.5)")
    table = effects(trials, "f1_minority")
    ctx.save_table(table, "effects")
    plants = POOLED in table["scope"].to_list()
    doc.paragraph(
        "Main effect = mean F1 with the option on minus off, over all other settings; two-way interaction = half "
        "the change of one option's effect when the other is turned on. Least squares on +-1 codes, "
        "t-intervals on the residual (three-way and higher interactions and seeds)"
        + ("; per plant and pooled with a plant block." if plants else ".")
    )
    doc.table(table, "Effects on test minority F1 with 95% CI", 4)
    ctx.save_figure(
        fig.effects_figure(table, title=f"{data.name}: effects on minority F1"),
        "effects",
        "Main effects and two-way interactions on test minority F1 with 95% least-squares t-intervals"
        + (", per plant and pooled over plants." if plants else "."),
    )
    ranking = best_and_worst(trials, "f1_minority")
    ctx.save_table(config_means(trials, "f1_minority"), "config_means")
    over = "averaged over plants" if plants else "mean over seeds"
    doc.table(
        ranking, f"Table 4.4: best and worst three configurations (minority F1 {over}; thesis Average by Config Id)"
    )
    doc.table(thesis_table_4_4(), "The thesis' Table 4.4 (ResNet34, PlantVillage), Config Ids spelled out", 4)
    top_three = table_4_3(trials)
    if top_three is not None:
        on = "on the first plant" if plants else f"on {ctx.names.data()}"
        doc.table(top_three, f"Table 4.3: top three configurations per class {on}, thesis rows beside")
    _gain_factor_part(ctx)
    pooled = table.filter(pl.col("scope") == table["scope"][-1])
    top = pooled.sort(pl.col("estimate").abs(), descending=True).row(0, named=True)
    best = ranking.row(0, named=True)
    scope = f" ({top['scope']})" if top["scope"] != "all" else ""
    effect = f"largest effect on minority F1{scope}: {top['term']} {top['estimate']:+.3f}"
    caveat = None
    if top["ci_low"] is None or top["ci_low"] != top["ci_low"]:
        # An unreplicated grid with every interaction in the model leaves no residual to estimate the error.
        caveat = f"no residual degrees of freedom ({top['runs']} runs): the effects have no interval; add seeds"
    else:
        effect += f" [95% CI {top['ci_low']:+.3f}, {top['ci_high']:+.3f}]"
    ranked = f"best configuration {best['config']} (minority F1 {best['Average']:.3f}, {over})"
    return Headline("Factorial", (effect, ranked), caveat)


def _gain_factor_part(ctx: Context) -> None:
    gains = gain_factors(ctx.data.trials)
    ctx.save_table(gains, "gain_factors")
    ctx.doc.table(
        gains,
        f"Figure 4.5: gain factor per single option; thesis: BN alone {FIGURE_4_5_BN['baseline']} -> "
        f"{FIGURE_4_5_BN['option']} minority F1, gain factor {FIGURE_4_5_BN['gain_factor']}",
    )
    if gains.height:
        ctx.save_figure(
            fig.gain_factor_figure(gains, title=f"{ctx.data.name}: one option at a time", titles=ctx.names.titles()),
            "gain_factor",
            "Figure 4.5: (F1 with one option - F1 with none) / F1 with none, test F1 per class, means over seeds"
            + (" and plants" if plant_column(ctx.data.trials) else "")
            + "; a missing bar: that configuration was not run, or its baseline F1 is 0.",
        )
