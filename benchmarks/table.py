"""The one table every benchmark prints: benchmark, baseline, this tool, ratio, target."""

from __future__ import annotations

COLUMNS = ("benchmark", "baseline", "this tool", "ratio", "target")


def print_table(rows: list[dict[str, object]]) -> None:
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for row in rows:
        ratio = row["ratio"]
        cells = [str(row[c]) for c in COLUMNS[:3]] + [f"{ratio:.2f}x" if isinstance(ratio, float) else str(ratio)]
        print("| " + " | ".join([*cells, str(row["target"])]) + " |")
