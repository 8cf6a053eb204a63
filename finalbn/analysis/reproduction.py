"""docs/reproduction.md: every thesis finding the ``cpu`` sweeps can test, the thesis' number, ours, a verdict.

``write_reproduction(results, out)`` reads the finished ``cpu`` sweep folders
under ``results/`` (headline, bn_removal, batch_size, factorial,
imbalance_ratio, learning_rate), builds each one's report (for its figures),
and writes one Markdown document: per finding, the thesis' claim and number,
our estimate with its 95% interval, and a verdict decided by a rule fixed
here, before any result was seen:

- a directional claim ("final BN raises minority F1") is *confirmed* when
  the 95% interval of the paired difference lies above zero, *contradicted*
  when it lies below, *inconclusive* when it includes zero;
- the threshold and the batch optimum compare the thesis' number with the
  interval their analyses give (``finalbn.analysis.threshold`` and
  ``batch``), which is never narrower than the grid and the seeds resolve;
  with fewer than 5 seeds they are inconclusive;
- a sweep that has not run gives *not run*, never a guess; a claim whose arms
  the sweep declares no contrast of (``SweepSpec.contrasts``) gives *not declared*.

Agreement in size is reported beside the verdict (is the thesis' number
inside our interval?), not folded into it: the cpu preset swaps the
thesis' trunk for a frozen EfficientNet-Lite0, so levels may differ while
the direction holds.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from pathlib import Path

import polars as pl

from finalbn.analysis import thesis
from finalbn.analysis.batch import BatchOptimum, batch_optima
from finalbn.analysis.contrasts import arm_column, arms_of, contrasts_of, headline_contrast, paired
from finalbn.analysis.factorial import effects
from finalbn.analysis.learning_rate import LR, compact, gains, lr_table
from finalbn.analysis.literature import baselines_part, baselines_ratio_part
from finalbn.analysis.load import from_folder
from finalbn.analysis.mnist_parts import mnist_cnn_part, mnist_fc_part
from finalbn.analysis.render import Document
from finalbn.analysis.sweep_data import SweepData
from finalbn.analysis.tables import table_4_2, table_4_6
from finalbn.analysis.threshold import FEW_SEEDS, RATIO, Threshold, thresholds
from finalbn.analysis.verdicts import Finding, Interval, Part, Verdict
from finalbn.errors import UserError
from finalbn.records import write_text
from finalbn.sweep.spec import Contrast

PLANTS = ("Apple", "Pepper", "Tomato")
PLANT = "data.plant"


def sweep_name(experiment: str, preset: str) -> str:
    """The results folder of an experiment's sweep at a preset (finalbn.sweep.experiments names them so)."""
    return f"{experiment}-{preset}"


def write_reproduction(results: Path, out: Path, preset: str = "cpu") -> Path:
    """Write ``out`` (docs/reproduction.md) and its figures beside it, from the ``preset`` sweeps under ``results``.

    The document is the cpu preset's; another preset (smoke, in the tests) reads the same way.
    """
    from finalbn.analysis.report import build_report

    figures = out.parent / out.stem
    shutil.rmtree(figures, ignore_errors=True)
    figures.mkdir(parents=True)
    doc = Document("Reproducing the thesis on a CPU: the cpu sweeps against chapter 4")
    findings: list[Finding] = []
    bodies = Document("")
    ran = []
    for experiment, part_of in PARTS.items():
        folder = results / folder_of(experiment, preset)
        data = _load(folder)
        if data is None:
            findings += part_of(None).findings
            bodies.heading(f"{experiment}: not run")
            script = EXPERIMENT_OF.get(experiment, experiment)
            run = f"python sweeps/{script}.py {' '.join(run_argv(script, 'DIR'))}"
            bodies.note(f"no finished sweep at {folder}: run {run}")
            continue
        ran.append(f"{folder.name} ({data.trials.height} of {data.planned()} trials)")
        report = build_report(data, folder / "report", gradcam=False)
        part = part_of(data)
        findings += part.findings
        part.blocks(bodies)
        for path in report.figures:
            # Prefixes: a figure drawn per plant is numbered (batch_size_3).
            if path.stem.startswith(KEPT_FIGURES.get(experiment, ())):
                target = figures / f"{experiment}-{path.name}"
                shutil.copyfile(path, target)
                bodies.figure(target, f"{folder.name}: {path.stem.replace('_', ' ')}")
    _preamble(doc, ran)
    doc.heading("Findings")
    doc.table(_findings_table(findings), "Verdict rule: see the end of this document", 3, folded=False)
    doc.blocks += bodies.blocks
    _rules(doc)
    return write_text(out, doc.markdown(out.parent))


def _load(folder: Path) -> SweepData | None:
    if not (folder / "trials.parquet").exists():
        return None
    try:
        return from_folder(folder)
    except UserError:
        return None


def _findings_table(findings: list[Finding]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "where": [f.where for f in findings],
            "thesis' claim": [f.claim for f in findings],
            "thesis": [f.thesis for f in findings],
            "ours (95% CI)": [f.ours for f in findings],
            "verdict": [f.verdict for f in findings],
            "thesis in our CI": [f.thesis_in_ci for f in findings],
        }
    )


# ------------------------------------------------------------------ Table 4.2 and Figure 4.9


def headline_part(data: SweepData | None) -> Part:
    where, claim = "Table 4.2", "final BN raises minority F1 over plain, per plant"
    if data is None:
        return Part([_planned(where, claim)], _nothing)
    contrasts = contrasts_of(data.spec)
    if not contrasts:
        return Part([_undeclared(where, claim)], _nothing)
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
    if data is None:
        return Part([_planned(where, claim)], _nothing)
    contrasts = contrasts_of(data.spec)
    if not contrasts:
        return Part([_undeclared(where, claim)], _nothing)
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


def _preamble(doc: Document, ran: list[str]) -> None:
    doc.paragraph(
        "Generated by `python analysis/reproduction.py` from the `cpu` sweeps (every number below is recomputed "
        "from the trial records each time; nothing is typed in). The `cpu` preset runs the thesis protocol "
        "(three plants, 1000+10 / 150+7 / 150+150 images, 224 px, 10 epochs, batch 64, one-cycle peak 3e-3) on a "
        "frozen ImageNet EfficientNet-Lite0 trunk whose features are cached, training only the thesis head with "
        "and without the final BN; the thesis fine-tuned VGG19 or ResNet34. Levels can therefore differ from the "
        "thesis' while directions hold; the table says both."
    )
    doc.paragraph(
        "Tables 4.7 and 4.8 train from scratch (no trunk to cache), so they come from the `laptop` preset on the "
        "embedded MNIST subset with 5 seeds per cell (`python sweeps/mnist.py --seeds 5`). The baselines sweeps "
        "(`python sweeps/baselines.py --preset cpu`) go beyond the thesis: final BN against the standard remedies "
        "for class imbalance, under the balanced test set and the training prior."
    )
    doc.paragraph("Sweeps read: " + ("; ".join(ran) if ran else "none"))


def _rules(doc: Document) -> None:
    doc.heading("How verdicts are decided (fixed before any result was seen)")
    doc.paragraph(
        "Directional claims: the 95% percentile-bootstrap interval (2,000 resamples, seeded) of the mean paired "
        "difference over seeds. Above zero: confirmed; below zero: contradicted; includes zero: inconclusive. "
        "Levels ('minority F1 with final BN'): confirmed when the thesis' value is inside our interval, otherwise "
        "inconclusive (a different trunk may change the level; the direction rows decide the finding). "
        "Factorial: confirmed when the BN main effect's t-interval is above zero and above every other main "
        "effect's interval; contradicted when it is below zero or another effect's interval lies above it. "
        "Threshold: confirmed when the thesis' 0.1 lies inside the threshold's 95% interval (seed noise and grid "
        "resolution, never narrower than the swept bracket; docs/analysis.md), contradicted when outside, or when "
        "the gain is resolved at every ratio of a grid reaching past 0.2 (no level-off) or at none (no gain); "
        "batch optimum: confirmed when 64 lies inside the optimum's interval and a larger swept batch is "
        "distinguishably worse, contradicted when 64 lies outside it. Fewer than 5 seeds: inconclusive."
    )
    doc.paragraph(
        "Beyond the thesis, the imbalanced-learning baselines (fixed with this section, before the baselines sweeps "
        "ran): each method against final BN is 'final BN ahead' when the paired interval of method minus final BN "
        "lies below zero, 'method ahead' above, 'unresolved' otherwise; the claim that final BN finds the minority "
        "at least as well as every standard remedy is contradicted when any method is ahead in any setting, "
        "confirmed when final BN is ahead in every comparison, inconclusive otherwise. MNIST (Tables 4.7, 4.8): "
        "where the thesis reports a gain of more than 0.1 F1 the claim is a gain, judged as above; where it reports "
        "none the claim is no gain, contradicted when our interval lies above zero and otherwise inconclusive."
    )


PARTS: dict[str, Callable[[SweepData | None], Part]] = {
    "headline": headline_part,
    "bn_removal": bn_removal_part,
    "factorial": factorial_part,
    "imbalance_ratio": imbalance_part,
    "batch_size": batch_part,
    "learning_rate": learning_rate_part,
    "batch_steps": batch_steps_part,
    "mnist_cnn": mnist_cnn_part,
    "mnist_fc": mnist_fc_part,
    "baselines": baselines_part,
    "baselines_ratio": baselines_ratio_part,
}
# The sweep script that runs each part's sweep, where it is not the part's own name.
EXPERIMENT_OF = {
    "batch_steps": "learning_rate",
    "baselines_ratio": "baselines",
    "mnist_cnn": "mnist",
    "mnist_fc": "mnist",
}
# Sweeps with no cpu preset (trained from scratch: no trunk to cache) run this instead, in their own folders.
OTHER_RUN = {"mnist": ("laptop", ["--seeds", "5"], "+seeds=5")}
# The figures of each sweep's report copied next to the document.
KEPT_FIGURES: dict[str, tuple[str, ...]] = {
    "headline": ("loss_curves", "reliability", "softmax_outputs"),
    "factorial": ("effects",),
    "imbalance_ratio": ("imbalance_ratio",),
    "batch_size": ("batch_size",),
    "batch_steps": ("batch_size",),
    "baselines": ("methods_forest",),
    "baselines_ratio": ("methods_forest",),
}


def folder_of(part: str, preset: str) -> str:
    """The results folder a part reads: ``<sweep>-<preset>``, or for a sweep without a cpu preset the one
    OTHER_RUN names (``mnist_cnn-laptop+seeds=5``); a smoke document reads the smoke sweeps as they are."""
    script = EXPERIMENT_OF.get(part, part)
    if preset == "cpu" and script in OTHER_RUN:
        other, _, suffix = OTHER_RUN[script]
        return f"{part}-{other}{suffix}"
    return sweep_name(part, preset)


def run_argv(script: str, data: str) -> list[str]:
    """The flags that run one sweep script for the document."""
    if script in OTHER_RUN:
        preset, extra, _ = OTHER_RUN[script]
        return ["--preset", preset, *extra]
    return ["--preset", "cpu", "--data", data]


def run_cpu_sweeps(data: str, results: Path, extra: list[str]) -> None:
    """Every experiment of the document, preset cpu, into ``results``: a rerun resumes."""
    from finalbn.sweep.cli import run_script

    for experiment in dict.fromkeys(EXPERIMENT_OF.get(part, part) for part in PARTS):
        argv = [*run_argv(experiment, data), "--out", str(results), *extra]
        print(f"== python sweeps/{experiment}.py {' '.join(argv)}", flush=True)
        code = run_script(experiment, None, argv)
        if code:
            raise UserError(f"the {experiment} cpu sweep exited {code}: fix what it printed, then rerun this command")
