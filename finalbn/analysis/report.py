"""One report per sweep: the threshold or optimum it answers, the thesis' tables and figures, with CIs.

``write_report(sweep_folder)`` is the call a sweep makes when it ends;
``build_report(data, out)`` takes any loaded sweep (a folder, a Parquet file
or an MLflow experiment). Both write ``report.html`` (self-contained: every
figure inlined) and ``report.md`` (figures as PNG files beside it) and return
a ``ReportResult`` whose ``headline`` is the sweep's answer, one short
sentence per finding (``finalbn.analysis.headline``).

The document is assembled here: provenance, the section the sweep's
``sweep.json`` names (``finalbn.analysis.sections``), the per-seed and paired
parts every sweep gets, the with/without-final-BN figures, the methods.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

import finalbn
from finalbn import tracking

# Importing these modules registers their report sections.
from finalbn.analysis import baselines, batch, factorial, imbalance, learning_rate, tables  # noqa: F401
from finalbn.analysis.classes import DataNames
from finalbn.analysis.comparison_figures import comparison_figures
from finalbn.analysis.grid import GENERIC
from finalbn.analysis.headline import FEW_SEEDS
from finalbn.analysis.load import from_folder
from finalbn.analysis.progress import report_steps
from finalbn.analysis.render import Document
from finalbn.analysis.sections import MAX_ROWS, SECTIONS, Context
from finalbn.analysis.seeds import fewest_runs, paired_sections, seed_aggregation
from finalbn.analysis.sweep_data import SweepData
from finalbn.errors import UserError
from finalbn.provenance import git_commit
from finalbn.records import write_atomic, write_text
from finalbn.records.folders import (
    FAILURE,
    FIGURES,
    REPORT,
    REPORT_HTML,
    REPORT_MARKDOWN,
    SWEEP_RECORD,
    TABLES,
    TRIALS_TABLE,
)
from finalbn.sweep.spec import SweepSpec

DOCS = "docs/analysis.md"


@dataclass(frozen=True)
class ReportResult:
    html: Path
    markdown: Path
    # The sweep's answer, one sentence per line and per finding (threshold, optimum, largest effect, ...).
    headline: str
    # The report section that ran (the sweep's declared analysis, or "generic").
    kind: str
    figures: tuple[Path, ...] = ()
    # What was skipped or missing, one line each.
    notes: tuple[str, ...] = ()
    # Parent MLflow run the report was logged to, if any.
    mlflow_run_id: str | None = None


def write_report(
    sweep_folder: Path,
    spec: SweepSpec | None = None,
    *,
    out: Path | None = None,
    tracking_uri: str | None = None,
    gradcam: bool | None = None,
    progress: bool = True,
) -> ReportResult:
    """Analyse ``results/<sweep>/`` and write ``<sweep>/report/report.html`` and ``report.md``.

    ``spec``: the sweep's declaration, when it should override the folder's
    sweep.json. ``tracking_uri``: also log the report to the sweep's latest
    parent MLflow run. ``gradcam``: None draws Figure 4.4 when it is cheap
    (weights saved, a small CNN, or a GPU), True always, False never.
    ``progress``: name each step as it runs.
    """
    data = from_folder(Path(sweep_folder), spec=spec)
    result = build_report(data, Path(out) if out else Path(sweep_folder) / REPORT, gradcam, progress)
    return log_report(result, data.mlflow_experiment, tracking_uri) if tracking_uri else result


def build_report(data: SweepData, out: Path, gradcam: bool | None = None, progress: bool = True) -> ReportResult:
    """``progress``: name each step as it runs (a bar on a terminal, a line each otherwise)."""
    out = Path(out)
    figures_dir, tables_dir = out / FIGURES, out / TABLES
    for folder in (figures_dir, tables_dir):
        folder.mkdir(parents=True, exist_ok=True)
    doc = Document(f"finalbn analysis: {data.name}")
    names = DataNames.of(data.trials, data.spec)
    context = Context(data, doc, figures_dir, tables_dir, names, fewest_runs(data), notes=list(data.notes))
    kind = _section_name(context)
    # The factorial's effects already hold final BN against none at every other setting.
    paired = kind != "factorial"
    with report_steps(f"report {data.name}", 5 + paired, progress) as step:
        step("provenance")
        headline_slot = len(doc.blocks)
        _overview(context)
        step(f"{kind} section")
        section_start = len(doc.blocks)
        headline = SECTIONS.get(kind)(context)
        section_figures = [block for block in doc.blocks[section_start:] if block[0] == "figure"]
        step("per configuration over seeds")
        seed_aggregation(context)
        if paired:
            step("declared contrasts, paired by seed")
            paired_sections(context)
        step("figures of the headline contrast" + (", Grad-CAM" if gradcam else ""))
        comparison_figures(context, gradcam)
        _methods(context)
        sentences = headline.sentences()
        if data.failed or data.missing:
            sentences += (f"This is a partial sweep: {data.trials.height} of {data.planned()} trials finished.",)
        codes = data.versions.get("code_fingerprint", [])
        if len(codes) > 1:
            sentences += (
                f"This sweep mixes {len(codes)} code versions (kept with --keep-stale): {TRIALS_TABLE}'s "
                "code_fingerprint column says which trial ran which.",
            )
        _open_with_answer(doc, headline_slot, sentences, section_figures)
        _write_tables(doc, tables_dir)
        step(f"writing {REPORT_HTML} and {REPORT_MARKDOWN}")
        html_path, md_path = out / REPORT_HTML, out / REPORT_MARKDOWN
        # Atomic: a full disk leaves the last report whole and says so in one line.
        write_text(html_path, doc.html())
        write_text(md_path, doc.markdown(out))
    return ReportResult(html_path, md_path, "\n".join(sentences), kind, tuple(doc.figures()), tuple(context.notes))


# What a report opens with: the answer in at most this many sentences, then one figure.
OPENING_SENTENCES = 3


def _open_with_answer(
    doc: Document, slot: int, sentences: tuple[str, ...], section_figures: list[tuple[str, object]]
) -> None:
    """Put the answer first: at most OPENING_SENTENCES verdict sentences, then the section's first figure
    (else the document's first), moved up from where it was drawn; further sentences follow as notes."""
    lead = section_figures[0] if section_figures else next((b for b in doc.blocks if b[0] == "figure"), None)
    opening: list[tuple[str, object]] = [("headline", sentences[:OPENING_SENTENCES])]
    if lead is not None:
        doc.blocks.remove(lead)
        opening.append(lead)
    opening += [("note", sentence) for sentence in sentences[OPENING_SENTENCES:]]
    doc.blocks[slot:slot] = opening


def _write_tables(doc: Document, folder: Path) -> None:
    """Every table of the report also as CSV and Parquet in ``report/tables/``, numbered in document order and
    named by its caption, so the numbers behind a folded table are one file away."""
    for index, (caption, frame) in enumerate(doc.tables(), start=1):
        stem = f"{index:02d}-{_slug(caption)}"
        write_atomic(folder / f"{stem}.csv", frame.write_csv)
        write_atomic(folder / f"{stem}.parquet", frame.write_parquet)


def _slug(caption: str) -> str:
    """A file-name part of a caption: lower-case words joined by dashes, at most 60 characters."""
    words = re.findall(r"[a-z0-9.]+", caption.lower())
    return "-".join(words)[:60].strip("-.") or "table"


def log_report(result: ReportResult, experiment: str, tracking_uri: str) -> ReportResult:
    """Attach the report (HTML, Markdown, figures) to the sweep's latest parent run, under ``report/``."""
    files = {REPORT: [result.html, result.markdown], f"{REPORT}/{FIGURES}": list(result.figures)}
    run_id = tracking.log_report_files(tracking_uri, experiment, files, result.headline)
    if run_id is None:
        raise UserError(
            f"MLflow experiment {experiment!r} at {tracking_uri} has no sweep run to attach the report to: "
            "run the sweep with tracking on, or drop --tracking-uri"
        )
    return dataclasses.replace(result, mlflow_run_id=run_id)


def _section_name(ctx: Context) -> str:
    """The section the sweep declares; one this version does not know falls back to generic, said so."""
    kind = ctx.data.analysis
    if kind in SECTIONS:
        return kind
    ctx.notes.append(f"no report section {kind!r} in finalbn {finalbn.__version__}: the generic report is shown")
    return GENERIC


def _overview(ctx: Context) -> None:
    data, doc = ctx.data, ctx.doc
    spec = data.spec
    if spec is not None and spec.description:
        doc.paragraph(f"Reproduces {spec.reproduces}. {spec.description}" if spec.reproduces else spec.description)
    for note in ctx.notes:
        doc.note(note)
    doc.heading("Provenance")
    planned = data.planned()
    versions = data.versions
    rows = [
        ("source", data.source),
        ("analysis", data.analysis),
        ("trials finished", str(data.trials.height)),
        ("trials planned", str(planned) if spec is not None else f"{planned} (no {SWEEP_RECORD}: the grid is unknown)"),
        ("trials failed", str(len(data.failed))),
        ("grid points missing", str(len(data.missing))),
        ("finalbn version (sweep, trials)", ", ".join(versions.get("finalbn", [])) or "unknown"),
        ("torch version (sweep, trials)", ", ".join(versions.get("torch", [])) or "unknown"),
        ("git commit (sweep, trials)", ", ".join(versions.get("git_commit", [])) or "not recorded"),
        ("code fingerprint (sweep, trials)", ", ".join(versions.get("code_fingerprint", [])) or "not recorded"),
        ("analysed with", f"finalbn {finalbn.__version__}, git {git_commit()}"),
        ("analysed at", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")),
    ]
    doc.table(pl.DataFrame(rows, schema=["item", "value"], orient="row"))
    if data.failed:
        failed = pl.DataFrame({"trial_id": list(data.failed), "last error line": list(data.failed.values())})
        doc.table(failed.head(MAX_ROWS), f"Failed trials (every attempt failed; see each folder's {FAILURE})")
        ctx.notes.append(f"{len(data.failed)} trial(s) failed")
    if data.missing:
        missing = pl.DataFrame(data.missing)
        doc.table(missing.head(MAX_ROWS), f"Grid points with no finished trial ({len(data.missing)})")
        ctx.notes.append(f"{len(data.missing)} grid point(s) missing")


def _methods(ctx: Context) -> None:
    ctx.doc.heading("Methods")
    fewest = ctx.seeds
    if fewest < FEW_SEEDS:
        line = (
            f"few runs: as few as {fewest} per configuration; a percentile-bootstrap interval from n runs covers the "
            "true mean far less often than 95% (with 2 runs it is their range: 50%), so read intervals as the spread "
            "of the runs at hand; the permutation and sign-flip p-values are exact and stay valid with few runs"
        )
        if fewest == 1:
            line = "one run per configuration: per-configuration intervals are undefined (shown as -)"
        ctx.notes.append(line)
        ctx.doc.note("Caution: " + line + ".")
    ctx.doc.paragraph(
        "Intervals are 95% percentile bootstraps over runs (2,000 resamples, seeded: the same tables give the same "
        "report). With two seeds an interval only shows how far the two runs are apart. Factorial intervals are "
        f"least-squares t-intervals. The methods are described in {DOCS} of the finalbn repository."
    )
