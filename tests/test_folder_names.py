"""One module owns every name a results folder holds (finalbn.records.folders): no other module under finalbn/
spells one. The scan reads string constants from the source (f-strings' literal parts too, docstrings not): a
file name ("summary.json") anywhere in a string, a folder name ("trials") where a path is joined from it."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from finalbn.records import folders

PACKAGE = Path(__file__).resolve().parents[1] / "finalbn"
OWNER = PACKAGE / "records" / "folders.py"
# Files that may spell a name, and why: only text for a person, never a path. This list only shrinks.
ALLOWED = {
    # A flag's help text: --no-model "do not write model.pt".
    "train/cli.py": "model.pt",
}
# Dotted names are found inside any text (a message that names the file); folder names only as path parts or
# as a module's own constant.
FILE_NAMES = sorted(name for name in folders.ALL if "." in name)
FOLDER_NAMES = frozenset(name for name in folders.ALL if "." not in name)
SPELLED = re.compile(r"(?<![\w.])(?:" + "|".join(map(re.escape, FILE_NAMES)) + r")(?![\w])")


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _path_parts(tree: ast.AST) -> Iterator[ast.Constant]:
    """String operands of ``/``, arguments of a path's joinpath / with_name / glob, and module constants."""
    for node in ast.walk(tree):
        if node in getattr(tree, "body", ()) and isinstance(node, ast.Assign | ast.AnnAssign):
            if isinstance(node.value, ast.Constant):
                yield node.value
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            yield from (side for side in (node.left, node.right) if isinstance(side, ast.Constant))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in ("joinpath", "with_name", "glob", "rglob"):
                yield from (arg for arg in node.args if isinstance(arg, ast.Constant))


def spelled(source: str) -> list[str]:
    """``line: name`` for each results-folder name the source spells as a literal."""
    tree = ast.parse(source)
    skipped = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skipped:
            found += [f"{node.lineno}: {match}" for match in SPELLED.findall(node.value)]
    for node in _path_parts(tree):
        if node.value in FOLDER_NAMES:
            found.append(f"{node.lineno}: {node.value}/")
    return sorted(set(found))


def test_no_module_but_the_owner_spells_a_results_folder_name() -> None:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if path == OWNER or relative in ALLOWED:
            continue
        problems += [f"finalbn/{relative}:{hit}" for hit in spelled(path.read_text())]
    assert not problems, "spell these through finalbn.records.folders:\n" + "\n".join(problems)


def test_every_allowed_file_still_spells_one() -> None:
    """An allowed file that no longer spells a name leaves the list (which only shrinks)."""
    clean = [name for name in ALLOWED if not spelled((PACKAGE / name).read_text())]
    assert not clean, f"remove from ALLOWED: {clean}"


def test_the_scan_finds_what_it_must_and_nothing_else() -> None:
    source = '''
"""A docstring may name summary.json."""
from pathlib import Path
folder = Path("x")
a = folder / "summary.json"
b = f"see {folder}/trials.parquet"
c = folder / "trials" / "t1"
d = pl.len().alias("trials")
REPORT = "report"
e = "my.summary.jsonl"
'''
    assert spelled(source) == ["5: summary.json", "6: trials.parquet", "7: trials/", "9: report/"]
