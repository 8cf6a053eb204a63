"""The import contract: layers are checked, not hoped for.

The graph is read from the source (every ``import``, including those inside
functions, except ``if TYPE_CHECKING:`` blocks), so a lazy import cannot hide
a layer break. Rules:

- no import cycles among finalbn's modules;
- trial code (config, data, models, train with its command line, metrics, records) imports nothing
  of sweep, tracking, launch, analysis or the ``finalbn`` command, and no Ray, MLflow or submitit;
- analysis trains and scores nothing itself: it imports no finalbn.train and no finalbn.metrics
  (Grad-CAM retrains a missing model through ``python -m finalbn.train``);
- data imports nothing of models, models nothing of data;
- the sweep core (sweep, launch, tracking, spec, jobs) never imports analysis;
- only finalbn.tracking imports mlflow;
- finalbn's root keeps at most ten modules, and a module past 450 lines says why it stays whole.

Three tests plant a violation in a copy of the package and check that it is caught.
"""

from __future__ import annotations

import ast
import shutil
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "finalbn"

TRIAL = (
    "finalbn.config",
    "finalbn.data",
    "finalbn.models",
    "finalbn.train",
    "finalbn.metrics",
    "finalbn.records",
)
ORCHESTRATION = (
    "finalbn.sweep",
    "finalbn.tracking",
    "finalbn.launch",
    "finalbn.analysis",
    "finalbn.cli",
    "ray",
    "mlflow",
    "submitit",
)
SWEEP_CORE = ("finalbn.sweep", "finalbn.launch", "finalbn.tracking")
# What analysis reads trained models and scores through: their records, never the code that made them.
TRAINING = ("finalbn.train", "finalbn.metrics")

Graph = dict[str, set[str]]


def within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def build_graph(package: Path) -> Graph:
    """Module -> the modules it imports (finalbn's own, plus third-party top-level names)."""
    modules = {_module_name(package, path): path for path in package.rglob("*.py")}
    graph: Graph = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        graph[name] = {_resolve(target, modules) for target in _imports(path, name, is_package)}
    return graph


def _module_name(package: Path, path: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module: str, is_package: bool) -> Iterator[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped = {id(node) for block in ast.walk(tree) if _type_checking(block) for node in ast.walk(block)}
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # "from pkg import sub" imports the submodule when there is one; _resolve decides.
            yield from (f"{base}.{alias.name}" for alias in node.names)


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _resolve(target: str, modules: dict[str, Path]) -> str:
    """The longest known finalbn module a dotted target names; the top-level name of any other."""
    if not target.startswith("finalbn"):
        return target.split(".")[0]
    parts = target.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return "finalbn"


def cycles(graph: Graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), plus self-imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, ()):
            if succ not in graph:
                continue
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def violations(graph: Graph) -> list[str]:
    problems = [f"import cycle: {' <-> '.join(c)}" for c in cycles(graph)]
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if within(module, TRIAL) and within(target, ORCHESTRATION):
                problems.append(f"trial code {module} imports {target}")
            if within(module, ("finalbn.analysis",)) and within(target, TRAINING):
                problems.append(f"analysis {module} imports training {target}")
            if within(module, ("finalbn.data",)) and within(target, ("finalbn.models",)):
                problems.append(f"data {module} imports models {target}")
            if within(module, ("finalbn.models",)) and within(target, ("finalbn.data",)):
                problems.append(f"models {module} imports data {target}")
            # The sweep command (finalbn.sweep.cli) writes the report once its sweep ends: a command line, not the core.
            if within(module, SWEEP_CORE) and module != "finalbn.sweep.cli" and within(target, ("finalbn.analysis",)):
                problems.append(f"sweep core {module} imports analysis {target}")
            if target == "mlflow" and not within(module, ("finalbn.tracking",)):
                problems.append(f"{module} imports mlflow: only finalbn.tracking talks to MLflow")
    return problems


def test_the_package_keeps_its_layers() -> None:
    graph = build_graph(PACKAGE)
    assert len(graph) > 40 and "finalbn.train" in graph and "finalbn.sweep.driver" in graph
    assert violations(graph) == []


def plant(tmp_path: Path, module: str, line: str) -> Graph:
    copy = tmp_path / "finalbn"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    path = copy.joinpath(*module.split(".")[1:])
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    path.write_text(path.read_text() + f"\n\ndef _planted() -> None:\n    {line}\n")
    return build_graph(copy)


def test_a_planted_layer_break_is_caught(tmp_path: Path) -> None:
    problems = violations(plant(tmp_path, "finalbn.models.net", "from finalbn.data import build_manifest"))
    assert problems == ["models finalbn.models.net imports data finalbn.data"]


def test_a_planted_cycle_and_orchestration_import_are_caught(tmp_path: Path) -> None:
    problems = violations(plant(tmp_path, "finalbn.config", "import finalbn.sweep.driver"))
    assert any(p.startswith("import cycle:") and "finalbn.config" in p for p in problems), problems
    assert "trial code finalbn.config imports finalbn.sweep.driver" in problems


def test_the_arrows_that_once_ran_the_wrong_way_are_caught(tmp_path: Path) -> None:
    """``python -m finalbn.train`` once reached the sweep's cost model through the command line, and the
    analysis once took its reliability bins from finalbn.metrics and retrained through finalbn.train.results."""
    entry = violations(plant(tmp_path / "entry", "finalbn.train.__main__", "from finalbn.sweep import costs"))
    assert entry == ["trial code finalbn.train.__main__ imports finalbn.sweep.costs"]
    metrics = violations(plant(tmp_path / "bins", "finalbn.analysis.figures", "from finalbn.metrics import ECE_BINS"))
    assert metrics == ["analysis finalbn.analysis.figures imports training finalbn.metrics"]
    results = violations(
        plant(tmp_path / "cam", "finalbn.analysis.gradcam", "from finalbn.train.results import run_config")
    )
    assert results == ["analysis finalbn.analysis.gradcam imports training finalbn.train.results"]


# The plan in the folders: what sits loose at finalbn's root is shared by every layer, so it stays few.
ROOT_MODULES = 10
# A module past this many lines holds more than one concern, unless it says why it stays whole.
LONG_MODULE_LINES = 450
# Those that stay whole, and why (the README's Layout section says the same).
STAY_WHOLE = {
    "finalbn/config.py": "the trial config's dataclasses, which the fingerprinted trial code imports from it",
    "finalbn/data/sources.py": "under the code fingerprint: splitting it would mark every finished trial stale",
}


def test_the_root_keeps_few_modules() -> None:
    loose = sorted(path.stem for path in PACKAGE.glob("*.py") if path.name != "__init__.py")
    assert len(loose) <= ROOT_MODULES, loose


def test_a_long_module_states_why_it_stays_whole() -> None:
    long = {
        path.relative_to(PACKAGE.parent).as_posix()
        for path in PACKAGE.rglob("*.py")
        if len(path.read_text().splitlines()) > LONG_MODULE_LINES
    }
    assert long <= set(STAY_WHOLE), sorted(long - set(STAY_WHOLE))
