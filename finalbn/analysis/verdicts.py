"""What docs/reproduction.md is made of: a finding's verdict by a rule fixed before any result was seen, the
interval it rests on, and one sweep's part of the document."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

from finalbn.analysis.render import Document
from finalbn.analysis.stats import DEFAULT, mean_ci

Verdict = Literal["confirmed", "contradicted", "inconclusive", "not run", "not declared"]


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
