"""The sweep command's options: one frozen dataclass per concern, typed.

Each field's comment is its flag's help: finalbn.sweep.cli generates the flags from these classes (as
finalbn.train.cli does for the trial config) and turns argv into them once; from then on only these
objects travel (the driver takes ``SweepOptions``, ``finalbn.launch.build_backend`` a ``BackendOptions``
holding ``RayOptions`` and finalbn.launch.slurm's ``SlurmOptions``, whose fields are the Slurm flags).
Each checks its own values when it is made, so a bad number fails in one line naming its flag.

Nothing here imports torch, Ray or MLflow (--help parses with it), nor finalbn.launch: the backends
import this module, so the names they register are a Literal here, held equal to the registry by a test.
"""

from __future__ import annotations

import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from finalbn.errors import UserError
from finalbn.names import is_utf8
from finalbn.sweep.experiments import ClassFolders, Data
from finalbn.sweep.overrides import Overrides

AUTO = "auto"
Auto = Literal["auto"]
# finalbn.launch.BACKENDS' names, sorted as the registry lists them (tests/test_sweep_cli.py holds the two equal).
BackendName = Literal["local", "ray", "serial", "slurm"]
# finalbn.sweep.experiments.PRESETS, smallest first (tests/test_sweep_cli.py holds the two equal).
Preset = Literal["smoke", "laptop", "cpu", "paper"]
SourceName = Literal["plantvillage", "folder"]


def flag(default: Any, *, metavar: str | None = None, repeat: Literal["append", "extend"] | None = None) -> Any:
    """A field whose flag reads its value in its own way: ``metavar`` names the value in --help; ``repeat``
    "append" takes one value per flag (--axis a --axis b), "extend" several per flag, and more flags."""
    return field(default=default, metadata={"metavar": metavar, "repeat": repeat})


@dataclass(frozen=True)
class ScriptOptions:
    """What the command does with the sweeps its script declares."""

    # grid size (default: laptop)
    preset: Preset = "laptop"
    # where trials run (default: local)
    backend: BackendName = "local"
    # print the grid and its estimated cost, train nothing
    dry_run: bool = False
    # refuse to start when any image under --data is unreadable (zero-byte, corrupt, too small) instead of
    # skipping and counting it
    strict: bool = False
    # with --dry-run: time one trial for two epochs here and predict the sweep's wall time from it
    calibrate: bool = False
    # show tracebacks for user errors
    debug: bool = False

    def __post_init__(self) -> None:
        _check_choice("--preset", self.preset, Preset)
        _check_choice("--backend", self.backend, BackendName)


@dataclass(frozen=True)
class DataOptions:
    """Where the images come from: PlantVillage's folders, MNIST, or your own class folders."""

    # data root (PlantVillage folder; full MNIST folder for mnist --preset paper)
    data: str | None = None
    # what --data holds: PlantVillage's <Plant>___<condition> folders (default), or any tree of one folder per
    # class, named with --majority and --minority
    source: SourceName = "plantvillage"
    # --source folder: majority classes
    majority: tuple[str, ...] = flag((), metavar="FOLDER")
    # --source folder: minority classes
    minority: tuple[str, ...] = flag((), metavar="FOLDER")
    # --source folder: merge the minority folders into one class, as PlantVillage pools its diseases
    pool_minority: bool = False

    def __post_init__(self) -> None:
        _check_choice("--source", self.source, SourceName)
        if self.source == "plantvillage":
            named = [name for name in ("majority", "minority", "pool_minority") if getattr(self, name)]
            if named:
                given = f"--{named[0].replace('_', '-')}"
                raise UserError(f"{given} names class folders of --source folder: add --source folder, or drop {given}")
        elif self.data is None or not self.majority or not self.minority:
            raise UserError(
                "--source folder needs --data DIR --majority A [...] --minority B [...], class folders under DIR"
            )

    def declared(self) -> Data:
        """What the sweeps are declared on: --data checked to be a folder (None: the preset's own data)."""
        if self.data is None:
            return None
        root = Path(self.data).expanduser()
        if not root.is_dir():
            raise UserError(f"--data {self.data} is not a folder: point --data at the data root")
        if self.source == "plantvillage":
            return str(root.resolve())
        return ClassFolders(str(root.resolve()), self.majority, self.minority, self.pool_minority)


@dataclass(frozen=True)
class OverrideOptions:
    """Changes to the declared grid; recorded in sweep.json, they change trial ids."""

    # change the base config, e.g. --set train.lr=3e-3 model.backbone=resnet18 (tuples: a+b)
    set: tuple[str, ...] = flag((), metavar="SECTION.FIELD=VALUE", repeat="extend")
    # replace or add an axis, e.g. --axis data.train_minority=5,10,20; a joint axis by label:
    # --axis variant=plain,final_BN
    axis: tuple[str, ...] = flag((), metavar="NAME=V1,V2", repeat="append")
    # seed axis 0..N-1 instead of the preset's
    seeds: int | None = flag(None, metavar="N")
    # results folder and MLflow experiment of this sweep (default: the preset's name, plus the overrides when
    # any are given, so an overridden grid never overwrites the preset's tables and report; finished trials
    # with the same id are reused from the other sweeps under --out)
    name: str | None = None

    def __post_init__(self) -> None:
        given = self.name
        if given is not None and (
            not given.strip(". ") or "/" in given or not given.isprintable() or not is_utf8(given)
        ):
            raise UserError(f"--name {given!r}: give one folder name (no '/', not '.' or '..', printable UTF-8)")

    def overrides(self) -> Overrides:
        return Overrides(sets=self.set, axes=self.axis, seeds=self.seeds)

    def folder(self, declared_name: str, declared: int) -> str | None:
        """--name for one of ``declared`` sweeps: an experiment that declares several puts each under its own."""
        if self.name is None:
            return None
        return self.name if declared == 1 else f"{self.name}-{declared_name}"


@dataclass(frozen=True)
class RefineOptions:
    """The threshold search after the grid (sweeps/imbalance_ratio.py)."""

    # after the grid, bisect the threshold's bracket of data.train_minority on log ratio, in rounds
    refine: bool = False
    # stop once every bracket's upper / lower ratio is below this (default 1.5)
    refine_factor: float = 1.5
    # most trials the refined points may cost in all (default: as many as the grid)
    refine_budget: int | None = flag(None, metavar="N")


@dataclass(frozen=True)
class SweepOptions:
    """How the driver runs a sweep's trials."""

    # results folder (default: results/)
    out: Path = Path("results")
    # trials at once (default: as many as resources allow)
    max_concurrent: int | None = None
    # CPU cores per trial (default 1)
    cpus_per_trial: float = 1.0
    # GPUs per trial; 0.25 packs four per GPU; auto packs by a calibration trial's peak memory
    # (the sweep command turns auto into a number before any trial runs)
    gpus_per_trial: float | Auto = 0.0
    # retries of a failed trial (default 2)
    retries: int = 2
    # show Ray's own logs and tables
    verbose: bool = False
    # reuse finished trials computed by other code (a file of finalbn's data, models, train or metrics changed
    # since) instead of retraining them; trials.parquet then says which code made each
    keep_stale: bool = False

    def __post_init__(self) -> None:
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise UserError(f"--max-concurrent {self.max_concurrent}: use 1 or more")
        if not self.cpus_per_trial > 0:
            raise UserError(f"--cpus-per-trial {self.cpus_per_trial}: use a number > 0, e.g. 1 or 0.5")
        if self.gpus_per_trial != AUTO and not (math.isfinite(self.gpus_per_trial) and self.gpus_per_trial >= 0):
            raise UserError(f"--gpus-per-trial {self.gpus_per_trial}: use auto or a number >= 0")
        if self.retries < 0:
            raise UserError(f"--retries {self.retries}: use 0 or more")


@dataclass(frozen=True)
class TrackingOptions:
    """Where the sweep's runs are logged."""

    # MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlruns.db)
    tracking_uri: str | None = None
    # do not log to MLflow
    no_tracking: bool = False

    def uri(self) -> str | None:
        """The store to log to; None: tracking off."""
        if self.no_tracking:
            return None
        from finalbn.tracking import default_tracking_uri

        return self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(Path.cwd())


@dataclass(frozen=True)
class RayOptions:
    """Where --backend ray runs: a running cluster, or a private Ray on this machine."""

    # the cluster's HOST:PORT (default: $RAY_ADDRESS; neither: a private Ray on this machine, on 127.0.0.1 only)
    address: str | None = None

    def resolved(self) -> str | None:
        return self.address or os.environ.get("RAY_ADDRESS") or None


def _check_choice(flag_name: str, value: str, choices: Any) -> None:
    """A Literal field's value is one of its names (argparse checks the command line's; this, the rest)."""
    names = typing.get_args(choices)
    if value not in names:
        raise UserError(f"{flag_name} {value!r}: choose one of {', '.join(names)}")
