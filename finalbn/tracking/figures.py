"""Pictures of one trial for its MLflow run: the UI previews PNGs, not the Parquet and CSV records.

Drawn from the trial folder's records when the run is closed (tens of milliseconds each), with
matplotlib's object API: no pyplot, so no global figure state in a driver that logs from threads.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from finalbn.records import RecordError, read_metrics, write_atomic
from finalbn.records.folders import CONFUSION, CONFUSION_FIGURE, LEARNING_CURVES, METRICS

# Small pictures: a preview pane, not a print.
DPI = 80
# Titles at a fixed height: placing them automatically measures every tick label, a sixth of the drawing.
TITLE_Y = 1.0
# Per-epoch columns worth a curve, when the trial logged them.
LOSSES = ("train_loss", "val_loss", "test_loss")
SCORES = ("val_f1_minority", "test_f1_minority", "test_f1_majority")


def trial_figures(folder: Path, trial_id: str, into: Path) -> list[Path]:
    """``CONFUSION_FIGURE`` and ``LEARNING_CURVES`` in ``into``, each when its record is there and reads back."""
    drawn = []
    if (folder / CONFUSION).exists():
        drawn.append(_save(confusion_figure(*read_confusion(folder / CONFUSION)), into / CONFUSION_FIGURE))
    try:
        epochs = read_metrics(folder / METRICS, trial_id) if (folder / METRICS).exists() else None
    except RecordError:
        epochs = None
    if epochs is not None and epochs.height:
        drawn.append(_save(curves_figure(epochs), into / LEARNING_CURVES))
    return drawn


def read_confusion(path: Path) -> tuple[list[str], np.ndarray]:
    """The classes and counts of a confusion.csv (rows true, columns predicted)."""
    with path.open(newline="") as handle:
        header, *rows = list(csv.reader(handle))
    return header[1:], np.array([[int(count) for count in row[1:]] for row in rows], dtype=np.int64)


def confusion_figure(classes: list[str], counts: np.ndarray) -> Figure:
    figure = Figure(figsize=(1.6 + 0.7 * len(classes), 1.2 + 0.7 * len(classes)))
    axes = figure.add_subplot()
    axes.imshow(counts, cmap="Blues")
    ticks = range(len(classes))
    axes.set_xticks(ticks, classes, rotation=45 if len(classes) > 3 else 0)
    axes.set_yticks(ticks, classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title("test confusion matrix", fontsize=9, y=TITLE_Y)
    # Dark cells take white numbers.
    threshold = counts.max() / 2 if counts.size else 0
    for (row, column), count in np.ndenumerate(counts):
        color = "white" if count > threshold else "black"
        axes.text(column, row, str(count), ha="center", va="center", color=color)
    return figure


def curves_figure(epochs: pl.DataFrame) -> Figure:
    figure = Figure(figsize=(7.0, 2.8))
    losses, scores = figure.subplots(1, 2)
    for axes, columns, title in ((losses, LOSSES, "loss"), (scores, SCORES, "F1")):
        for column in (c for c in columns if c in epochs.columns):
            axes.plot(epochs["epoch"].to_numpy(), epochs[column].to_numpy(), marker="o", markersize=3, label=column)
        axes.set_xlabel("epoch")
        axes.set_title(title, fontsize=9, y=TITLE_Y)
        axes.legend(fontsize=7)
    scores.set_ylim(-0.02, 1.02)
    # Fixed margins for this fixed size: tight_layout measured every text and took a third of the drawing.
    figure.subplots_adjust(left=0.07, right=0.98, bottom=0.16, top=0.9, wspace=0.22)
    return figure


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # format given: the temporary file's name does not end in .png.
    write_atomic(path, lambda temporary: figure.savefig(temporary, format="png", dpi=DPI))
    return path
