"""The manifest: which file lands in which split, as a table that can be saved and hashed."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from finalbn.config import canonical_json
from finalbn.errors import UserError
from finalbn.records import write_atomic

SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("label", pa.string()),
        ("label_index", pa.int32()),
        ("role", pa.string()),
        ("split", pa.string()),
        ("sha256", pa.string()),
        ("group", pa.string()),
    ]
)
_META_KEYS = ("classes", "minority", "root", "skipped")


# eq=False: a DataFrame field has no boolean ==; compare fingerprint() instead.
@dataclass(frozen=True, eq=False)
class Manifest:
    """Every selected image with its class and split.

    ``table`` columns are those of SCHEMA, sorted by split (train, val, test),
    label_index, path. ``group`` names the unit that was kept within one split
    (a leaf "<class>/<leaf id>" or, without one, the image's sha256).
    """

    table: pl.DataFrame
    classes: tuple[str, ...]
    minority: tuple[int, ...]
    root: str | None
    skipped: dict[str, int]

    def fingerprint(self) -> str:
        """sha256 over (path, label, split, sha256) rows: the exact data, wherever the root is."""
        rows = self.table.select("path", "label", "split", "sha256").rows()
        return hashlib.sha256(canonical_json(rows).encode()).hexdigest()

    def write(self, path: str | Path) -> None:
        """Parquet with classes/minority/root/skipped as key-value metadata; deterministic bytes."""
        meta = {
            "classes": list(self.classes),
            "minority": list(self.minority),
            "root": self.root,
            "skipped": self.skipped,
        }
        table = (
            self.table.to_arrow()
            .cast(SCHEMA)
            .replace_schema_metadata({f"finalbn.{k}": canonical_json(v) for k, v in meta.items()})
        )
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Written whole or not at all: another sweep, or a worker, may read it now.
        write_atomic(Path(path), lambda temporary: pq.write_table(table, str(temporary), compression="zstd"))

    @classmethod
    def read(cls, path: str | Path) -> Manifest:
        try:
            table = pq.read_table(str(path))
        except (OSError, pa.ArrowInvalid) as error:
            raise UserError(
                f"cannot read manifest {path} ({error}): give the path of a manifest Parquet file"
            ) from None
        raw = table.schema.metadata or {}
        keys = [f"finalbn.{k}".encode() for k in _META_KEYS]
        if table.schema.remove_metadata() != SCHEMA or any(k not in raw for k in keys):
            raise UserError(f"{path} is not a finalbn manifest: give a file written by Manifest.write")
        meta = {k: json.loads(raw[key]) for k, key in zip(_META_KEYS, keys, strict=True)}
        return cls(
            table=pl.from_arrow(table.replace_schema_metadata(None)),
            classes=tuple(meta["classes"]),
            minority=tuple(meta["minority"]),
            root=meta["root"],
            skipped=meta["skipped"],
        )
