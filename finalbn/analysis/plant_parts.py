"""docs/reproduction.md's findings from the PlantVillage ``cpu`` sweeps: Tables 4.2-4.6, Figures 4.6-4.7, and
the learning-rate sweeps beyond the thesis, each a ``Part`` (its findings and the blocks it adds to the document).

The verdict rules are ``finalbn.analysis.reproduction``'s, fixed there before any result was seen.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import polars as pl

from finalbn.analysis import thesis
from finalbn.analysis.batch import BatchOptimum, batch_optima
from finalbn.analysis.contrasts import arm_column, arms_of, contrasts_of, headline_contrast, paired
from finalbn.analysis.factorial import effects
from finalbn.analysis.learning_rate import LR, compact, gains, lr_table
from finalbn.analysis.render import Document
from finalbn.analysis.sweep_data import SweepData
from finalbn.analysis.tables import table_4_2, table_4_6
from finalbn.analysis.threshold import FEW_SEEDS, RATIO, Threshold, thresholds
from finalbn.analysis.verdicts import Finding, Interval, Part, Verdict
from finalbn.sweep.spec import Contrast

PLANTS = ("Apple", "Pepper", "Tomato")
PLANT = "data.plant"


def _unread(data: SweepData | None, where: str, claim: str) -> Part:
    """The part of a finding whose sweep has not run, or declares no contrast to read it by."""
    return Part([_planned(where, claim) if data is None else _undeclared(where, claim)], _nothing)


# ------------------------------------------------------------------ Table 4.2 and Figure 4.9


def headline_part(data: SweepData | None) -> Part:
    where, claim = "Table 4.2", "final BN raises minority F1 over plain, per plant"
    if data is None or not contrasts_of(data.spec):
        return _unread(data, where, claim)
    contrasts = contrasts_of(data.spec)
    trials = arms_of(data.trials, data.spec).trials
    headline = contrasts[0]
    column = arm_column(trials, headline.axis)
    findings = []
    for plant, frame in _by_plant(trials):
        printed = thesis.TABLE_4_2.get(plant, {}).get("minority")
        numbers = {label: printed[i] for label, i in thesis.TABLE_4_2_ARMS.items()} if printed else {}
        findings += _contrast_findings(
            f"Table 4.2, {plant}", frame, contrasts, numbers, {}, (thesis.TABLE_4_2_ARMS, TABLE_4_2_CLAIMS), 3
        )
        findings += _undeclared_claims(f"Table 4.2, {plant}", contrasts, thesis.TABLE_4_2_ARMS, TABLE_4_2_CLAIMS)
        level = Interval.of(frame.filter(pl.col(column).cast(pl.String) == headline.treated)["f1_minority"])
        if headline.treated in numbers:
            expected = numbers[headline.treated]
            findings.append(
                Finding(
                    f"Table 4.2, {plant}",
                    f"minority F1 of {headline.treated}",
                    f"{expected:.3f}",
                    level.text(),
                    "confirmed" if level.contains(expected) == "yes" else "inconclusive",
                    level.contains(expected),
                )
            )
        brier = _paired(frame, "brier", Contrast(headline.axis, headline.control, headline.treated))
        thesis_pair = numbers.keys() >= {headline.treated, headline.control} and plant == "Apple"
        findings.append(
            brier.finding(
                f"Figure 4.9, {plant}",
                f"{headline.treated} lowers the Brier score ({headline.control} minus {headline.treated} > 0)",
                f"{thesis.FIGURE_4_9_BRIER['none']:.3f} -> {thesis.FIGURE_4_9_BRIER['bn']:.3f}" if thesis_pair else "-",
            )
        )

    heading = "Table 4.2: plain vs weighted loss vs final BN (minority and majority F1)"
    caption = "Test F1, mean over seeds with 95% bootstrap CI; thesis: VGG19, ours: frozen Lite0"
    return Part(findings, _thesis_table(heading, table_4_2(data.trials, data.spec), caption))


# ------------------------------------------------------------------ Table 4.6


def bn_removal_part(data: SweepData | None) -> Part:
    where, claim = "Table 4.6", "removing the final BN at test keeps most of the gain"
    if data is None or not contrasts_of(data.spec):
        return _unread(data, where, claim)
    contrasts = contrasts_of(data.spec)
    trials = arms_of(data.trials, data.spec).trials
    findings = []
    for plant, frame in _by_plant(trials):
        numbers = {
            label: thesis.TABLE_4_6[row][plant][1]
            for label, row in thesis.TABLE_4_6_ARMS.items()
            if plant in thesis.TABLE_4_6[row]
        }
        arms = {label: label for label in thesis.TABLE_4_6_ARMS}
        findings += _contrast_findings(
            f"Table 4.6, {plant}", frame, contrasts, numbers, thesis.TABLE_4_6_ARMS, (arms, TABLE_4_6_CLAIMS), 2
        )
        findings += _undeclared_claims(f"Table 4.6, {plant}", contrasts, arms, TABLE_4_6_CLAIMS)

    heading = "Table 4.6: final BN kept vs removed at test"
    table = table_4_6(data.trials, data.spec)
    return Part(findings, _thesis_table(heading, table, "Test F1, mean over seeds with 95% bootstrap CI"))


# The thesis' directional claims of Tables 4.2 and 4.6, as (treated, control) pairs of its arms (Table 4.2:
# column indices of thesis.TABLE_4_2_ARMS; Table 4.6: labels of thesis.TABLE_4_6_ARMS). A declared contrast
# of the same arms carries the claim; one the sweep does not declare is listed as "not declared".
TABLE_4_2_CLAIMS: dict[tuple[object, object], str] = {
    (2, 0): "final BN raises minority F1 over the plain network",
    (2, 1): "final BN beats the weighted loss",
}
TABLE_4_6_CLAIMS: dict[tuple[object, object], str] = {
    ("removed", "none"): "trained with final BN, removed at test: still better than never having it",
    ("bn", "removed"): "removing it costs part of the gain (kept minus removed > 0)",
}


def _contrast_findings(
    where: str,
    frame: pl.DataFrame,
    contrasts: tuple[Contrast, ...],
    numbers: dict[str, float],
    names: dict[str, str],
    claims: tuple[dict[str, object], dict[tuple[object, object], str]],
    digits: int,
) -> list[Finding]:
    """One finding per declared contrast: treated raises minority F1 over control, paired by seed, in the
    thesis' words where it makes that claim (``claims``: its arms and claims); the thesis' numbers beside it
    where the thesis has both arms (``names``: how the thesis calls an arm)."""
    arms, said = claims
    found = []
    for contrast in contrasts:
        treated, control = (names.get(label, label) for label in (contrast.treated, contrast.control))
        claim = said.get((arms.get(contrast.treated), arms.get(contrast.control)))
        gain = _paired(frame, "f1_minority", contrast)
        if contrast.treated in numbers and contrast.control in numbers:
            t, c = numbers[contrast.treated], numbers[contrast.control]
            text, expected = f"{c:.{digits}f} -> {t:.{digits}f} ({t - c:+.{digits}f})", t - c
        else:
            text, expected = "-", None
        found.append(gain.finding(where, claim or f"{treated} raises minority F1 over {control}", text, expected))
    return found


def _undeclared_claims(
    where: str, contrasts: tuple[Contrast, ...], arms: dict[str, object], claims: dict[tuple[object, object], str]
) -> list[Finding]:
    """The thesis' claims no declared contrast carries: listed, never computed from a guessed pair."""
    declared = {(arms.get(c.treated), arms.get(c.control)) for c in contrasts}
    return [Finding(where, claim, "-", "-", "not declared") for pair, claim in claims.items() if pair not in declared]


# ------------------------------------------------------------------ Tables 4.3-4.4 / Figure 4.5


def factorial_part(data: SweepData | None) -> Part:
    claim = "adding the final BN is the largest main effect on minority F1"
    if data is None:
        return Part([_planned("Tables 4.3-4.4", claim)], _nothing)
    table = effects(data.trials, interactions=False)
    mains = table.filter(~pl.col("term").str.contains(" x "))
    findings = []
    for scope in mains["scope"].unique(maintain_order=True).to_list():
        rows = mains.filter(pl.col("scope") == scope)
        bn = rows.filter(pl.col("term") == "BN").row(0, named=True)
        others = rows.filter(pl.col("term") != "BN")
        beaten = others.filter(pl.col("ci_low") > bn["ci_high"])["term"].to_list()
        largest = bool(others.is_empty() or bn["estimate"] > others["estimate"].max())
        verdict: Verdict
        if bn["ci_high"] < 0 or beaten:
            verdict = "contradicted"
        elif bn["ci_low"] > 0 and largest and (others.is_empty() or bn["ci_low"] > others["ci_high"].max()):
            verdict = "confirmed"
        else:
            verdict = "inconclusive"
        rest = ", ".join(f"{r['term']} {r['estimate']:+.3f}" for r in others.iter_rows(named=True))
        findings.append(
            Finding(
                f"Tables 4.3-4.4, {scope}",
                claim,
                "BN alone: 0.42 -> 0.95 (Figure 4.5)",
                f"BN {bn['estimate']:+.3f} [{bn['ci_low']:+.3f}, {bn['ci_high']:+.3f}]; {rest}",
                verdict,
            )
        )

    def blocks(doc: Document) -> None:
        doc.heading("Factorial (BN x WL x WD, the cacheable factors): main effects on minority F1")
        columns = mains.select("scope", "term", "estimate", "ci_low", "ci_high", "runs")
        doc.table(columns, "Least-squares t-intervals", 3)

    return Part(findings, blocks)


# ------------------------------------------------------------------ Figures 4.6 and 4.7


def imbalance_part(data: SweepData | None) -> Part:
    claim = f"the final BN's gain levels off near a minority ratio of {thesis.FIGURE_4_6_THRESHOLD:g}"
    if data is None:
        return Part([_planned("Figure 4.6", claim)], _nothing)
    contrast = headline_contrast(data.spec)
    if contrast is None:
        return Part([_undeclared("Figure 4.6", claim)], _nothing)
    trials = arms_of(data.trials, data.spec).trials
    found = thresholds(trials, contrast, metrics=("f1_minority",), by=_plant_group(trials))
    findings = [
        Finding(
            f"Figure 4.6{''.join(f', {v}' for v in t.group.values())}",
            claim,
            f"~{thesis.FIGURE_4_6_THRESHOLD:g} (by eye)",
            t.describe(),
            threshold_verdict(t),
        )
        for t in found
    ]

    def blocks(doc: Document) -> None:
        doc.heading("Figure 4.6: the imbalance threshold")
        for t in found:
            doc.paragraph(t.describe())
            curve = t.curve.select(RATIO, "pairs", "gain_mean", "gain_lo", "gain_hi", "resolved")
            doc.table(curve, f"Gain of {contrast.text()} in minority F1 per ratio (paired by seed, 95% CI)", 3)

    return Part(findings, blocks)


def threshold_verdict(found: Threshold) -> Verdict:
    """The thesis' ~0.1 against the threshold's 95% interval (seed noise and grid resolution together)."""
    claimed = thesis.FIGURE_4_6_THRESHOLD
    if found.seeds < FEW_SEEDS:
        return "inconclusive"
    if found.status == "found":
        high = found.high if found.high is not None else math.inf
        return "confirmed" if found.low is not None and found.low <= claimed <= high else "contradicted"
    if found.status == "beyond":
        # Resolved at every ratio: a level-off near 0.1 is refuted only if the grid went well past it.
        return "contradicted" if found.largest_ratio >= 2 * claimed else "inconclusive"
    # No resolved gain even at the smallest ratio: nothing levels off because nothing rose.
    return "contradicted" if found.smallest_ratio < claimed else "inconclusive"


def batch_part(data: SweepData | None) -> Part:
    claim = f"minority F1 peaks near batch {thesis.FIGURE_4_7_BEST_BATCH} and falls for larger batches"
    return _optimum_part(data, "Figure 4.7", claim, "Figure 4.7: the batch optimum")


def batch_verdict(found: BatchOptimum) -> Verdict:
    """The thesis' 64 against the optimum's interval (the best's swept neighbours and seed resamples)."""
    low, high = found.interval
    if not low <= thesis.FIGURE_4_7_BEST_BATCH <= high:
        return "contradicted" if found.seeds >= FEW_SEEDS else "inconclusive"
    falls = any(n.batch_size > found.best and n.distinguishable for n in found.neighbours)
    return "confirmed" if falls and found.seeds >= FEW_SEEDS else "inconclusive"


# ------------------------------------------------------------------ beyond the thesis: learning rate, fixed steps


def learning_rate_part(data: SweepData | None) -> Part:
    claim = "final BN raises minority F1 at this learning rate (the thesis ran fastai v1's default peak, 3e-3)"
    if data is None:
        return Part([_planned("Learning rate x final BN", claim)], _nothing)
    contrast = headline_contrast(data.spec)
    if contrast is None:
        return Part([_undeclared("Learning rate x final BN", claim)], _nothing)
    trials = arms_of(data.trials, data.spec).trials
    by = _plant_group(trials)
    differences = gains(trials, contrast, by).filter(pl.col("metric") == "f1_minority")
    findings = [
        Interval(row["difference_mean"], row["difference_lo"], row["difference_hi"], row["pairs"]).finding(
            f"Learning rate {row[LR]:g}{f', {row[PLANT]}' if by else ''}", claim, "-"
        )
        for row in differences.iter_rows(named=True)
    ]

    def blocks(doc: Document) -> None:
        doc.heading("Beyond the thesis: learning rate x final BN (10 epochs, 1% ratio)")
        table = compact(lr_table(trials, contrast, by), contrast, by)
        doc.table(table, f"Test metrics per learning rate, {contrast.treated} and {contrast.control}", 3)

    return Part(findings, blocks)


def batch_steps_part(data: SweepData | None) -> Part:
    claim = "Figure 4.7's optimum near 64 holds when every batch size trains the same number of steps"
    heading = "Beyond the thesis: the batch optimum at a fixed number of optimizer steps"
    return _optimum_part(data, "Figure 4.7 at fixed steps", claim, heading)


def _optimum_part(data: SweepData | None, where: str, claim: str, heading: str) -> Part:
    if data is None:
        return Part([_planned(where, claim)], _nothing)
    trials = data.trials
    # Figure 4.7 is the final-BN network's curve: a sweep with a contrast (with and without it) keeps its
    # treated arm's runs here; the other arm is in its report.
    contrast = headline_contrast(data.spec)
    if contrast is not None:
        trials = trials.filter(pl.col(arm_column(trials, contrast.axis)).cast(pl.String) == contrast.treated)
    found = batch_optima(trials, by=_plant_group(trials))
    findings = [
        Finding(
            f"{where}{''.join(f', {v}' for v in b.group.values())}",
            claim,
            str(thesis.FIGURE_4_7_BEST_BATCH),
            b.describe(),
            batch_verdict(b),
        )
        for b in found
    ]

    def blocks(doc: Document) -> None:
        doc.heading(heading)
        for b in found:
            doc.paragraph(b.describe())

    return Part(findings, blocks)


# ------------------------------------------------------------------ helpers


def _thesis_table(heading: str, table: pl.DataFrame, caption: str) -> Callable[[Document], None]:
    """A regenerated thesis table (finalbn.analysis.tables' long form) under its heading."""
    shown = table.select("plant", "class", "column", "measured", "ci_low", "ci_high", "runs", "thesis")

    def blocks(doc: Document) -> None:
        doc.heading(heading)
        doc.table(shown, caption, 3)

    return blocks


def _planned(where: str, claim: str) -> Finding:
    return Finding(where, claim, "-", "-", "not run")


def _undeclared(where: str, claim: str) -> Finding:
    return Finding(where, claim, "-", "no contrast declared", "not declared")


def _nothing(doc: Document) -> None:
    return None


def _plant_group(trials: pl.DataFrame) -> list[str]:
    return [PLANT] if PLANT in trials.columns and trials[PLANT].n_unique() > 1 else []


def _by_plant(trials: pl.DataFrame) -> list[tuple[str, pl.DataFrame]]:
    """Each plant present with its trials, in the thesis' order; trials without a plant axis are Apple's."""
    if PLANT not in trials.columns:
        return [("Apple", trials)]
    present = trials[PLANT].unique().to_list()
    return [(p, trials.filter(pl.col(PLANT) == p)) for p in PLANTS if p in present]


def _paired(frame: pl.DataFrame, metric: str, contrast: Contrast) -> Interval:
    return Interval.of(paired(frame, metric, contrast)["difference"])
