"""A sweep's headline: its answer, one short sentence per finding, atop the report and at the end of the sweep.

Every sentence is at most ``MAX_CHARS`` and names what it is about first
("Imbalance threshold: f1_minority: ..."). When the seeds per cell are too few
for the intervals to hold (fewer than ``FEW_SEEDS``), the first sentence says
so and how many would do, and the findings after it state means only: no
sentence then calls a gain resolved or unresolved, which such intervals
cannot carry, so the headline never claims what its own caveat takes back.
"""

from __future__ import annotations

from dataclasses import dataclass

# What a person reads at a glance; the tests hold every section's sentences to it.
MAX_CHARS = 200
# Runs per cell below which a percentile-bootstrap interval undercovers (two runs: their range, 50%).
FEW_SEEDS = 5
# The largest seed count a power calculation reports; a gain needing more is "too small to resolve".
MAX_SEEDS = 1000


@dataclass(frozen=True)
class SeedCount:
    """Seeds per cell against what the analysis needs, counted once per section."""

    # Fewest seeds (runs or pairs) in a cell of the analysis.
    have: int
    # What a cell is: "ratio", "batch size", "configuration", "learning rate".
    cell: str
    # What the seeds are too few for: "to locate a threshold", "for reliable intervals".
    goal: str
    # Seeds that would do: the power calculation's count, never fewer than FEW_SEEDS; None: more than MAX_SEEDS.
    needed: int | None = FEW_SEEDS

    @property
    def too_few(self) -> bool:
        return self.have < FEW_SEEDS

    def caveat(self) -> str:
        """``2 seeds per ratio: too few to locate a threshold; 7 needed``."""
        need = f"over {MAX_SEEDS} needed" if self.needed is None else f"{self.needed} needed"
        return f"{self.have} seed{'' if self.have == 1 else 's'} per {self.cell}: too few {self.goal}; {need}"


def seeds_to_ask(power: int | None, spread: float, effect: float, floor: int = FEW_SEEDS) -> int | None:
    """The seeds a caveat asks for: a power calculation's count (``threshold.seeds_needed``), never fewer
    than ``floor``; None when that calculation found more than MAX_SEEDS (a measured spread and a
    non-zero effect that no affordable count resolves). Without a spread or an effect it asks for ``floor``."""
    if power is None and spread == spread and spread > 0 and effect != 0:
        return None
    return max(floor, power or 0)


def most_needed(counts: list[int | None]) -> int | None:
    """The largest of several cells' needs (None, "more than MAX_SEEDS", is the largest)."""
    return None if any(c is None for c in counts) else max(counts, default=FEW_SEEDS)


@dataclass(frozen=True)
class Headline:
    """A section's answer: what it is about, an optional leading caveat, then one finding per sentence."""

    # "Imbalance threshold", "Batch optimum"; empty: the findings name themselves.
    label: str
    findings: tuple[str, ...]
    # Leads the headline when set: too few seeds, no interval at all, ...
    caveat: str | None = None

    @classmethod
    def of(cls, label: str, findings: list[str], seeds: SeedCount | None = None) -> Headline:
        caveat = seeds.caveat() if seeds is not None and seeds.too_few else None
        return cls(label, tuple(findings), caveat)

    def sentences(self) -> tuple[str, ...]:
        lead = (self.caveat,) if self.caveat else ()
        return tuple(_sentence(self.label, text) for text in (*lead, *self.findings))


def _sentence(label: str, text: str) -> str:
    text = text if text.endswith(".") else text + "."
    return f"{label}: {text}" if label else text[0].upper() + text[1:]
