"""The experiments are listed once, in their declarations (finalbn.sweep.experiments): every registered
experiment has its script sweeps/<name>.py and every script an experiment, and what the scripts' help and the
README's grid table say of each grid (its presets, its sweeps, their trial counts) is checked against them.
Nothing here trains: the counts come from the declarations, built without data."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from finalbn.errors import UserError
from finalbn.sweep.experiments import EXPERIMENTS, PRESETS, build_sweeps

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "sweeps"
# A path that does not exist: builders declare without touching the file system.
FAKE_ROOT = "/nonexistent/plantvillage"
# What --data each preset is asked with: the laptop preset runs with and without it.
DATA = {"smoke": (None,), "laptop": (None, FAKE_ROOT), "cpu": (FAKE_ROOT,), "paper": (FAKE_ROOT,)}


def declared(experiment: str, preset: str, data: str | None) -> dict[str, int] | None:
    """Sweep (its name without the preset) -> trials at this preset and data; None when the preset is refused."""
    try:
        specs = build_sweeps(experiment, preset, data)
    except UserError:
        return None
    return {spec.name.split("-")[0]: spec.size() for spec in specs}


def counts(experiment: str, preset: str) -> tuple[set[int], set[int]]:
    """(every sweep's count, and what the text may also state: the counts summed per data) at a preset."""
    sizes: set[int] = set()
    totals: set[int] = set()
    for data in DATA[preset]:
        found = declared(experiment, preset, data) or {}
        sizes |= set(found.values())
        totals.add(sum(found.values()))
    return sizes, sizes | totals


def numbers(text: str) -> set[int]:
    return {int(n.replace(",", "")) for n in re.findall(r"(?<![\w.-])\d[\d,]*(?![\w.])", text)}


# ------------------------------------------------------------ scripts


def test_every_registered_experiment_has_its_script_and_every_script_an_experiment() -> None:
    assert {path.stem for path in SCRIPTS.glob("*.py")} == set(EXPERIMENTS)
    for path in SCRIPTS.glob("*.py"):
        calls = [node for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Call)]
        named = [ast.literal_eval(c.args[0]) for c in calls if getattr(c.func, "id", None) == "run_script"]
        assert named == [path.stem], f"{path.name} runs {named}, not {path.stem}"


def preset_paragraphs(doc: str) -> dict[str, str]:
    """The docstring's paragraph per preset: from an indented line that starts with the preset's name to the
    next such line or a blank line."""
    found: dict[str, str] = {}
    current: str | None = None
    for line in doc.splitlines():
        head = re.match(r"    (\w+)\s{2,}\S", line)
        if head is not None and head.group(1) in PRESETS:
            current = head.group(1)
            found[current] = line
        elif current is not None and line.startswith("      "):
            found[current] += " " + line.strip()
        else:
            current = None
    return found


@pytest.mark.parametrize("experiment", EXPERIMENTS.names())
def test_the_scripts_help_states_the_declared_presets_sweeps_and_counts(experiment: str) -> None:
    doc = ast.get_docstring(ast.parse((SCRIPTS / f"{experiment}.py").read_text())) or ""
    paragraphs = preset_paragraphs(doc)
    assert set(paragraphs) == set(PRESETS), f"{experiment}: presets in the help {sorted(paragraphs)}"
    for preset, text in paragraphs.items():
        if all(declared(experiment, preset, data) is None for data in DATA[preset]):
            assert re.match(r"\s*\w+\s+none\b", text), f"{experiment} {preset}: refused, the help must say none"
            continue
        sizes, allowed = counts(experiment, preset)
        stated = {int(n.replace(",", "")) for n in re.findall(r"(\d[\d,]*) trials", text)}
        assert stated <= allowed, f"{experiment} {preset}: the help says {sorted(stated)} trials, declared {sizes}"
        assert sizes <= numbers(text), f"{experiment} {preset}: declared {sorted(sizes)} trials, help: {text}"
    names = {name for preset in PRESETS for data in DATA[preset] for name in declared(experiment, preset, data) or {}}
    if len(names) > 1:
        assert all(name in doc for name in names), f"{experiment}: its sweeps {sorted(names)} are not all named"


# ------------------------------------------------------------ README


def readme_rows() -> dict[str, list[str]]:
    """experiment -> the cells of its row in the README's grid table (script, reproduces, paper, cpu)."""
    text = (REPO / "README.md").read_text()
    table = text[text.index("| script | reproduces |") :].split("\n\n")[0].splitlines()[2:]
    rows = {}
    for line in table:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        script = re.fullmatch(r"`sweeps/(\w+)\.py`", cells[0])
        assert script is not None, line
        rows[script.group(1)] = cells[1:]
    return rows


def test_the_readme_grid_table_has_one_row_per_experiment() -> None:
    assert set(readme_rows()) == set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS.names())
def test_the_readme_grid_table_states_the_declared_counts(experiment: str) -> None:
    reproduces, paper, cpu = readme_rows()[experiment]
    for spec in build_sweeps(experiment, "paper", FAKE_ROOT):
        assert spec.reproduces in reproduces, f"{experiment}: declared {spec.reproduces!r}, README {reproduces!r}"
    for preset, cell in (("paper", paper), ("cpu", cpu)):
        sizes, _ = counts(experiment, preset)
        if not sizes:
            assert cell.startswith("none"), f"{experiment}: no {preset} preset, the README must say none"
            continue
        stated = {int(n) for n in re.findall(r"(?:= |the same )(\d+)", cell)}
        stated |= {int(n) for n in re.findall(r"the same \d+ and (\d+)", cell)}
        assert stated == sizes, f"{experiment} {preset}: README {sorted(stated)}, declared {sorted(sizes)}"
