"""Every name a results folder holds, spelled here once; everything else builds paths from these.

    <out>/                          the results root (--out, default results/)
        mlartifacts/                MLFLOW_ARTIFACTS: the MLflow store's artifacts
        <sweep>/                    a sweep folder
            sweep.json              SWEEP_RECORD: the declaration and the plan (finalbn.sweep.record)
            trials.parquet          TRIALS_TABLE: one row per finished trial
            epochs.parquet          EPOCHS_TABLE: one row per trial and epoch
            trials/<trial id>/      TRIALS: one trial folder per trial (below)
            manifests/              MANIFESTS: the split of each data set, by fingerprint
            claims/                 CLAIMS: which driver runs which trial (finalbn.sweep.claims)
            damaged/, stale/        DAMAGED, STALE: trial folders set aside, each beside its REASON text
            report/                 REPORT: the analysis (below)
            analysis/models/        ANALYSIS_MODELS: models Grad-CAM retrained
            slurm/state.json        SLURM_STATE: the Slurm backend's submissions (finalbn.launch.slurm)
    <working directory>/mlruns.db   MLFLOW_STORE: the default MLflow store

A trial folder holds CONFIG, MANIFEST, METRICS, PREDICTIONS, CONFUSION, SUMMARY (written last: the trial
finished), MODEL, CHECKPOINT while it trains and FAILURE when an attempt failed; the figures MLflow shows of
it are CONFUSION_FIGURE and LEARNING_CURVES. A report folder holds REPORT_HTML, REPORT_MARKDOWN, FIGURES/
(GRADCAM among them) and TABLES/.
"""

from __future__ import annotations

# The results root.
MLFLOW_ARTIFACTS = "mlartifacts"
MLFLOW_STORE = "mlruns.db"

# A sweep folder.
SWEEP_RECORD = "sweep.json"
TRIALS_TABLE = "trials.parquet"
EPOCHS_TABLE = "epochs.parquet"
TRIALS = "trials"
MANIFESTS = "manifests"
CLAIMS = "claims"
# Where planning sets aside a trial folder it will not reuse: unreadable records, or a record of other code.
DAMAGED = "damaged"
STALE = "stale"
REPORT = "report"
ANALYSIS_MODELS = ("analysis", "models")
SLURM_STATE = "state.json"

# A trial folder.
CONFIG = "config.json"
MANIFEST = "manifest.parquet"
METRICS = "metrics.parquet"
PREDICTIONS = "predictions.parquet"
CONFUSION = "confusion.csv"
SUMMARY = "summary.json"
FAILURE = "failure.json"
MODEL = "model.pt"
CHECKPOINT = "checkpoint.pt"
CONFUSION_FIGURE = "confusion.png"
LEARNING_CURVES = "learning_curves.png"

# A report folder.
REPORT_HTML = "report.html"
REPORT_MARKDOWN = "report.md"
FIGURES = "figures"
TABLES = "tables"
GRADCAM = "gradcam.png"


def reason_file(set_aside: str) -> str:
    """The text beside a set-aside trial folder that says why it was set aside."""
    return f"{set_aside}.reason.txt"


# Every file and folder name above, for the test that no other module spells one.
ALL = frozenset(
    {
        MLFLOW_ARTIFACTS,
        MLFLOW_STORE,
        SWEEP_RECORD,
        TRIALS_TABLE,
        EPOCHS_TABLE,
        TRIALS,
        MANIFESTS,
        CLAIMS,
        DAMAGED,
        STALE,
        REPORT,
        *ANALYSIS_MODELS,
        SLURM_STATE,
        CONFIG,
        MANIFEST,
        METRICS,
        PREDICTIONS,
        CONFUSION,
        SUMMARY,
        FAILURE,
        MODEL,
        CHECKPOINT,
        CONFUSION_FIGURE,
        LEARNING_CURVES,
        REPORT_HTML,
        REPORT_MARKDOWN,
        FIGURES,
        TABLES,
        GRADCAM,
    }
)
