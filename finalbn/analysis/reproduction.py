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

Each sweep's findings and blocks are its part's (``PARTS``): the PlantVillage
sweeps' in ``finalbn.analysis.plant_parts``, MNIST's in ``mnist_parts``, the
baselines' in ``literature``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import polars as pl

from finalbn.analysis.literature import baselines_part, baselines_ratio_part
from finalbn.analysis.load import from_folder
from finalbn.analysis.mnist_parts import mnist_cnn_part, mnist_fc_part
from finalbn.analysis.plant_parts import (
    batch_part,
    batch_steps_part,
    bn_removal_part,
    factorial_part,
    headline_part,
    imbalance_part,
    learning_rate_part,
)
from finalbn.analysis.render import Document
from finalbn.analysis.sweep_data import SweepData
from finalbn.analysis.verdicts import Finding, Part
from finalbn.errors import UserError
from finalbn.records import write_text
from finalbn.records.folders import REPORT, TRIALS_TABLE


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
        report = build_report(data, folder / REPORT, gradcam=False)
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
    if not (folder / TRIALS_TABLE).exists():
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
