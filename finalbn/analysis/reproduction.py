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
- a sweep that has not run gives *not run*, never a guess.

Agreement in size is reported beside the verdict (is the thesis' number
inside our interval?), not folded into it: the cpu preset swaps the
thesis' trunk for a frozen EfficientNet-Lite0, so levels may differ while
the direction holds.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from finalbn.analysis import thesis
from finalbn.analysis.batch import BatchOptimum, batch_optima
from finalbn.analysis.factorial import effects
from finalbn.analysis.learning_rate import LR, bn_gains, compact, lr_table
from finalbn.analysis.load import from_folder
from finalbn.analysis.render import Document
from finalbn.analysis.stats import DEFAULT, mean_ci, paired_differences
from finalbn.analysis.sweep_data import SweepData
from finalbn.analysis.tables import table_4_2, table_4_6
from finalbn.analysis.threshold import FEW_SEEDS, RATIO, Threshold, thresholds
from finalbn.errors import UserError
from finalbn.records import write_text

Verdict = Literal["confirmed", "contradicted", "inconclusive", "not run"]
PLANTS = ("Apple", "Pepper", "Tomato")
SEED = "train.seed"
PLANT = "data.plant"
NORM = "model.final_norm"


@dataclass(frozen=True)
class Finding:
    where: str
    claim: str
    thesis: str
    ours: str
    verdict: Verdict
    # The thesis' number inside our 95% interval: "yes", "no", or "-" where it does not apply.
    thesis_in_ci: str = "-"


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: pl.Series | list[float]) -> Interval:
        array = np.asarray(list(values), dtype=np.float64)
        array = array[~np.isnan(array)]
        low, high = mean_ci(array, DEFAULT)
        return cls(float(array.mean()) if array.size else float("nan"), low, high, int(array.size))

    def text(self, signed: bool = False) -> str:
        """E.g. "0.951 [0.930, 0.968] (n=10)"; ``signed`` for differences: "+0.310 [+0.250, +0.371] (n=10)"."""
        form = "+.3f" if signed else ".3f"
        return f"{self.mean:{form}} [{self.low:{form}}, {self.high:{form}}] (n={self.n})"

    def contains(self, value: float) -> str:
        if self.low != self.low:
            return "-"
        return "yes" if self.low <= value <= self.high else "no"

    def direction(self) -> Verdict:
        """The verdict of a claim that this difference is positive."""
        if self.low != self.low:
            return "inconclusive"
        if self.low > 0:
            return "confirmed"
        if self.high < 0:
            return "contradicted"
        return "inconclusive"

    def finding(self, where: str, claim: str, thesis: str, expected: float | None = None) -> Finding:
        """The finding of a claim that this difference is positive; ``expected``: the thesis' difference."""
        inside = "-" if expected is None else self.contains(expected)
        return Finding(where, claim, thesis, self.text(signed=True), self.direction(), inside)


@dataclass(frozen=True)
class Part:
    """One sweep's share of the document: its findings, the text and tables shown, the figures kept."""

    findings: list[Finding]
    blocks: Callable[[Document], None]


def sweep_name(experiment: str, preset: str) -> str:
    """The results folder of an experiment's sweep at a preset (finalbn.experiments names them so)."""
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
        folder = results / sweep_name(experiment, preset)
        data = _load(folder)
        if data is None:
            findings += part_of(None).findings
            bodies.heading(f"{experiment}: not run")
            run = f"python sweeps/{EXPERIMENT_OF.get(experiment, experiment)}.py --preset {preset} --data DIR"
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
    doc.table(_findings_table(findings), "Verdict rule: see the end of this document", 3)
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
    if data is None:
        return Part([_planned("Table 4.2", "final BN raises minority F1 over plain, per plant")], _nothing)
    trials = data.trials
    findings = []
    for plant, frame in _by_plant(trials):
        plain, wl, bn, improvement = thesis.TABLE_4_2.get(plant, {}).get("minority", (np.nan,) * 4)
        gain = _paired(frame, "f1_minority", "axis.variant", "final_BN", "plain")
        findings.append(
            gain.finding(
                f"Table 4.2, {plant}",
                "final BN raises minority F1 over the plain network",
                f"{plain:.3f} -> {bn:.3f} (+{bn - plain:.3f})",
                bn - plain,
            )
        )
        over_wl = _paired(frame, "f1_minority", "axis.variant", "final_BN", "WL")
        findings.append(
            over_wl.finding(
                f"Table 4.2, {plant}",
                "final BN beats the weighted loss",
                f"{wl:.3f} -> {bn:.3f} (+{improvement:.3f})",
                improvement,
            )
        )
        level = Interval.of(frame.filter(pl.col("axis.variant") == "final_BN")["f1_minority"])
        findings.append(
            Finding(
                f"Table 4.2, {plant}",
                "minority F1 with final BN",
                f"{bn:.3f}",
                level.text(),
                "confirmed" if level.contains(bn) == "yes" else "inconclusive",
                level.contains(bn),
            )
        )
        brier = _paired(frame, "brier", "axis.variant", "plain", "final_BN")
        findings.append(
            brier.finding(
                f"Figure 4.9, {plant}",
                "final BN lowers the Brier score (plain minus final BN > 0)",
                f"{thesis.FIGURE_4_9_BRIER['none']:.3f} -> {thesis.FIGURE_4_9_BRIER['bn']:.3f}"
                if plant == "Apple"
                else "-",
            )
        )

    heading = "Table 4.2: plain vs weighted loss vs final BN (minority and majority F1)"
    caption = "Test F1, mean over seeds with 95% bootstrap CI; thesis: VGG19, ours: frozen Lite0"
    return Part(findings, _thesis_table(heading, table_4_2(trials), caption))


# ------------------------------------------------------------------ Table 4.6


def bn_removal_part(data: SweepData | None) -> Part:
    if data is None:
        return Part([_planned("Table 4.6", "removing the final BN at test keeps most of the gain")], _nothing)
    trials = data.trials
    findings = []
    for plant, frame in _by_plant(trials):
        none, kept = thesis.TABLE_4_6["no final BN"][plant][1], thesis.TABLE_4_6["final BN"][plant][1]
        removed = thesis.TABLE_4_6["final BN removed at test"][plant][1]
        bn = frame.filter(pl.col("model.final_norm") == "bn")
        # The BN-trained model scored without its BN, paired by seed with the model trained without one.
        stripped = bn.with_columns(pl.col("nobn_f1_minority").alias("f1_minority"))
        both = pl.concat([frame.filter(pl.col("model.final_norm") == "none"), stripped], how="diagonal_relaxed")
        keeps = _paired(both, "f1_minority", "model.final_norm", "bn", "none")
        findings.append(
            keeps.finding(
                f"Table 4.6, {plant}",
                "trained with final BN, removed at test: still better than never having it",
                f"{none:.2f} -> {removed:.2f} (+{removed - none:.2f})",
                removed - none,
            )
        )
        loss = Interval.of((bn["f1_minority"] - bn["nobn_f1_minority"]).to_list())
        findings.append(
            loss.finding(
                f"Table 4.6, {plant}",
                "removing it costs part of the gain (kept minus removed > 0)",
                f"{kept:.2f} - {removed:.2f} = {kept - removed:.2f}",
                kept - removed,
            )
        )

    heading = "Table 4.6: final BN kept vs removed at test"
    return Part(findings, _thesis_table(heading, table_4_6(trials), "Test F1, mean over seeds with 95% bootstrap CI"))


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
    found = thresholds(data.trials, metrics=("f1_minority",), by=_plant_group(data.trials))
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
            doc.table(curve, "Final-BN gain in minority F1 per ratio (paired by seed, 95% CI)", 3)

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
    by = _plant_group(data.trials)
    gains = bn_gains(data.trials, by).filter(pl.col("metric") == "f1_minority")
    findings = [
        Interval(row["difference_mean"], row["difference_lo"], row["difference_hi"], row["pairs"]).finding(
            f"Learning rate {row[LR]:g}{f', {row[PLANT]}' if by else ''}", claim, "-"
        )
        for row in gains.iter_rows(named=True)
    ]

    def blocks(doc: Document) -> None:
        doc.heading("Beyond the thesis: learning rate x final BN (10 epochs, 1% ratio)")
        doc.table(compact(lr_table(data.trials, by), by), "Test metrics per learning rate and final BN", 3)

    return Part(findings, blocks)


def batch_steps_part(data: SweepData | None) -> Part:
    claim = "Figure 4.7's optimum near 64 holds when every batch size trains the same number of steps"
    heading = "Beyond the thesis: the batch optimum at a fixed number of optimizer steps"
    return _optimum_part(data, "Figure 4.7 at fixed steps", claim, heading)


def _optimum_part(data: SweepData | None, where: str, claim: str, heading: str) -> Part:
    if data is None:
        return Part([_planned(where, claim)], _nothing)
    trials = data.trials
    # Figure 4.7 is the final-BN network's curve; a sweep that also ran without it keeps those for its report.
    if NORM in trials.columns and "bn" in trials[NORM].to_list():
        trials = trials.filter(pl.col(NORM) == "bn")
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


def _paired(frame: pl.DataFrame, metric: str, factor: str, treated: str, control: str) -> Interval:
    pairs = paired_differences(frame, metric, factor, treated, control, pair_on=[SEED])
    return Interval.of(pairs["difference"])


def _preamble(doc: Document, ran: list[str]) -> None:
    doc.paragraph(
        "Generated by `python analysis/reproduction.py` from the `cpu` sweeps (every number below is recomputed "
        "from the trial records each time; nothing is typed in). The `cpu` preset runs the thesis protocol "
        "(three plants, 1000+10 / 150+7 / 150+150 images, 224 px, 10 epochs, batch 64, one-cycle peak 3e-3) on a "
        "frozen ImageNet EfficientNet-Lite0 trunk whose features are cached, training only the thesis head with "
        "and without the final BN; the thesis fine-tuned VGG19 or ResNet34. Levels can therefore differ from the "
        "thesis' while directions hold; the table says both."
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


PARTS: dict[str, Callable[[SweepData | None], Part]] = {
    "headline": headline_part,
    "bn_removal": bn_removal_part,
    "factorial": factorial_part,
    "imbalance_ratio": imbalance_part,
    "batch_size": batch_part,
    "learning_rate": learning_rate_part,
    "batch_steps": batch_steps_part,
}
# The sweep script that runs each part's sweep, where it is not the part's own name.
EXPERIMENT_OF = {"batch_steps": "learning_rate"}
# The figures of each sweep's report copied next to the document.
KEPT_FIGURES: dict[str, tuple[str, ...]] = {
    "headline": ("loss_curves", "reliability", "softmax_outputs"),
    "factorial": ("effects",),
    "imbalance_ratio": ("imbalance_ratio",),
    "batch_size": ("batch_size",),
    "batch_steps": ("batch_size",),
}


def run_cpu_sweeps(data: str, results: Path, extra: list[str]) -> None:
    """Every experiment of the document, preset cpu, into ``results``: a rerun resumes."""
    from finalbn.sweep_cli import run_script

    for experiment in dict.fromkeys(EXPERIMENT_OF.get(part, part) for part in PARTS):
        argv = ["--preset", "cpu", "--data", data, "--out", str(results), *extra]
        print(f"== python sweeps/{experiment}.py {' '.join(argv)}", flush=True)
        code = run_script(experiment, None, argv)
        if code:
            raise UserError(f"the {experiment} cpu sweep exited {code}: fix what it printed, then rerun this command")
