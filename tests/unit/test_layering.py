"""The layers of DESIGN.md, read from the source: imports point down, and no provenir module imports
itself back through others.

What counts as an import of module B by module A (read with ``ast``, nothing is imported):

* ``import B`` and ``from B import name`` anywhere in A: at module level, and inside functions too.
  A function-level ("lazy") import only defers the cost; A still depends on B, so it is held to
  the same layers and counts towards cycles. ``from pkg import sub`` depends on ``pkg.sub`` when
  ``sub`` is a module, else on ``pkg``. The implicit import of a module's parent packages is not
  counted.
* A string naming a module exactly, ``"provenir.x.y"`` or ``"provenir.x.y:Name"``: the form
  registries use to import by name (``BACKEND_REGISTRY``, the CLI's judge table).
* Not an import: one under ``if TYPE_CHECKING:``. DESIGN.md allows a lower module to name a higher
  one's type that way (the RAG generator's ``LLMJudge`` annotation); it never runs.

The rules:

1. Every module belongs to a unit of :data:`LAYERS` (a new package must be given a floor).
2. A unit imports only from itself and from lower layers. Units side by side on one floor are
   independent of each other. :data:`ALLOWED_UPWARD` holds the one exception DESIGN.md makes
   (train calls into distributed), and :data:`FORBIDDEN_DOWNWARD` the arrow it closes in return
   (distributed never imports train, although train sits below it).
3. No cycle among provenir modules.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def package(name: str) -> tuple[str, str]:
    """A package's patterns: its ``__init__`` and every module under it."""
    return (name, f"{name}.*")


#: floors, lowest first: {unit: patterns}. A pattern is a module's dotted name, or ``pkg.*`` for
#: every module under ``pkg``; a module's unit is the one whose pattern names it exactly, else the
#: one with the longest ``pkg.*`` covering it.
LAYERS: list[dict[str, tuple[str, ...]]] = [
    # config, manifest, hashing, store, errors, paths: imports nothing of Provenir above it
    {"core": ("provenir", *package("provenir.core"))},
    # the records and how they become text
    {"records": ("provenir.data", "provenir.data.dataset", "provenir.data.templates", "provenir.data._text")},
    # the ops: quality/decontamination/RAG/flywheel; PII, secrets, audit; metrics, judges
    {
        "data curation": ("provenir.data.*",),
        "governance": package("provenir.governance"),
        "eval": package("provenir.eval"),
    },
    # reward functions, built from eval's metrics, for the trainers above
    {"rewards": package("provenir.rewards")},
    # backends, RLAIF, callbacks, observability; merge, hub
    {"train": package("provenir.train"), "adapters": package("provenir.adapters")},
    # the Ray executors: import the ops they map, take training loops as callables
    {"distributed": package("provenir.distributed")},
    # a whole job (governance -> curation -> train -> manifest), and the demo built on it
    {"pipeline": ("provenir.pipeline", "provenir._demo")},
    # the faces: the server, then the CLI (which also starts the server)
    {"server": package("provenir.server")},
    {"cli": ("provenir.cli", *package("provenir._cli"))},
]

#: (importer unit, imported unit): upward imports DESIGN.md allows by name
ALLOWED_UPWARD = {
    ("train", "distributed"): "train may call into distributed to launch work on Ray",
}

#: (importer unit, imported unit): downward imports DESIGN.md rules out by name
FORBIDDEN_DOWNWARD = {
    ("distributed", "train"): "it takes training loops as callables",
}

@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    path: Path
    line: int
    lazy: bool

    def where(self) -> str:
        how = "lazy import" if self.lazy else "import"
        return f"{self.path}:{self.line}: {self.importer} -> {self.imported} ({how})"


def modules_of(root: Path, top: str = "provenir") -> dict[str, Path]:
    """Every module of the package ``top`` under ``root``, by dotted name."""
    found = {}
    for path in sorted((root / top).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else None
            if name == "TYPE_CHECKING":
                for child in node.body:
                    hidden.update(id(n) for n in ast.walk(child))
    return hidden


def _absolute(module: str, is_package: bool, level: int, name: str | None) -> str:
    if not level:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def imports_of(root: Path, top: str = "provenir") -> list[Import]:
    """Every import between the package's modules (see the module docstring for what counts)."""
    modules = modules_of(root, top)
    edges: list[Import] = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        hidden = _type_checking_nodes(tree)
        is_package = path.name == "__init__.py"
        lazy_nodes: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                lazy_nodes.update(id(n) for n in ast.walk(node) if n is not node)

        def add(target: str, node: ast.AST) -> None:
            while target and target not in modules:  # `import a.b.C`-style attribute paths
                target = target.rpartition(".")[0]
            if target and target != module:
                edges.append(Import(module, target, path.relative_to(root), node.lineno, id(node) in lazy_nodes))

        for node in ast.walk(tree):
            if id(node) in hidden:
                continue
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == top or alias.name.startswith(top + "."):
                        add(alias.name, node)
            elif isinstance(node, ast.ImportFrom):
                source = _absolute(module, is_package, node.level, node.module)
                if source != top and not source.startswith(top + "."):
                    continue
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    add(sub if sub in modules else source, node)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                named = node.value.split(":", 1)[0]
                if named.startswith(top + ".") and named in modules:
                    add(named, node)
    return edges


def unit_of(module: str) -> str | None:
    """The unit of :data:`LAYERS` a module belongs to, or ``None``."""
    best: tuple[int, str] | None = None
    for floor in LAYERS:
        for unit, patterns in floor.items():
            for pattern in patterns:
                if pattern == module:
                    return unit
                if pattern.endswith(".*") and module.startswith(pattern[:-1]):
                    if best is None or len(pattern) > best[0]:
                        best = (len(pattern), unit)
    return best[1] if best else None


def floor_of(unit: str) -> int:
    return next(i for i, floor in enumerate(LAYERS) if unit in floor)


def layer_violations(edges: list[Import]) -> list[tuple[Import, str]]:
    """The imports that point up a floor, or sideways to another unit on the same floor."""
    found = []
    for edge in edges:
        a, b = unit_of(edge.importer), unit_of(edge.imported)
        if a is None or b is None or a == b or (a, b) in ALLOWED_UPWARD:
            continue
        if (a, b) in FORBIDDEN_DOWNWARD:
            found.append((edge, f"{a} imports {b}, which DESIGN.md rules out ({FORBIDDEN_DOWNWARD[a, b]})"))
            continue
        fa, fb = floor_of(a), floor_of(b)
        if fb > fa:
            found.append((edge, f"{a} imports {b}, a floor above it"))
        elif fb == fa:
            found.append((edge, f"{a} imports {b}, beside it on the same floor (they must stay independent)"))
    return found


def cycles(edges: list[Import]) -> list[list[str]]:
    """One cycle per strongly connected group of modules (Tarjan), each as a closed path."""
    graph: dict[str, set[str]] = defaultdict(set)
    for edge in edges:
        graph[edge.importer].add(edge.imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(start: str) -> None:  # iterative: no recursion limit on a long chain
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.add(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_path_within(group, graph) for group in groups]


def _path_within(group: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A closed path through the group, from its first module back to it (breadth first)."""
    start = min(group)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & group):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle through {sorted(group)}")  # pragma: no cover - Tarjan found one


# -- the checks over provenir -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def edges() -> list[Import]:
    return imports_of(REPO)


def test_every_module_has_a_floor():
    homeless = sorted(m for m in modules_of(REPO) if unit_of(m) is None)
    assert not homeless, f"give these modules a unit in LAYERS: {homeless}"


def test_imports_point_down_the_layers(edges):
    found = layer_violations(edges)
    assert not found, "imports against the layers of DESIGN.md:\n" + "\n".join(
        f"  {edge.where()}: {why}" for edge, why in found
    )


def test_no_import_cycles(edges):
    found = cycles(edges)
    assert not found, "import cycles among provenir modules:\n" + "\n".join(
        "  " + " -> ".join(cycle) for cycle in found
    )


# -- the checker itself finds what it must ------------------------------------------------------------


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_the_checker_sees_lazy_relative_and_registry_imports_but_not_type_checking_ones(tmp_path):
    root = _tree(tmp_path, {
        "provenir/__init__.py": "",
        "provenir/core/__init__.py": "",
        "provenir/core/config.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from provenir.train.rlaif import Loop\n"
            "def check():\n    from provenir.data.templates import TEMPLATES\n"
        ),
        "provenir/data/__init__.py": "",
        "provenir/data/templates.py": "from ..core import config\n",
        "provenir/data/quality.py": "",
        "provenir/governance/__init__.py": "from . import pii\n",
        "provenir/governance/pii.py": "from provenir.data import quality\nREGISTRY = {'x': 'provenir.train.rlaif:Loop'}\n",
        "provenir/train/__init__.py": "",
        "provenir/train/rlaif.py": "import provenir.distributed.data\n",
        "provenir/distributed/__init__.py": "",
        "provenir/distributed/data.py": "",
        "provenir/distributed/train.py": "def launch():\n    from provenir.train.rlaif import Loop\n",
    })
    found = {(e.importer, e.imported, e.lazy) for e in imports_of(root)}
    assert found == {
        ("provenir.core.config", "provenir.data.templates", True),
        ("provenir.data.templates", "provenir.core.config", False),
        ("provenir.governance", "provenir.governance.pii", False),
        ("provenir.governance.pii", "provenir.data.quality", False),
        ("provenir.governance.pii", "provenir.train.rlaif", False),
        ("provenir.train.rlaif", "provenir.distributed.data", False),
        ("provenir.distributed.train", "provenir.train.rlaif", True),
    }
    reasons = {(e.importer, e.imported): why for e, why in layer_violations(imports_of(root))}
    assert reasons == {
        ("provenir.core.config", "provenir.data.templates"): "core imports records, a floor above it",
        ("provenir.governance.pii", "provenir.data.quality"):
            "governance imports data curation, beside it on the same floor (they must stay independent)",
        ("provenir.governance.pii", "provenir.train.rlaif"): "governance imports train, a floor above it",
        ("provenir.distributed.train", "provenir.train.rlaif"):
            "distributed imports train, which DESIGN.md rules out (it takes training loops as callables)",
    }  # train -> distributed is the allowed upward import
    assert cycles(imports_of(root)) == [["provenir.core.config", "provenir.data.templates", "provenir.core.config"]]


def test_a_longer_cycle_is_reported_as_a_closed_path(tmp_path):
    root = _tree(tmp_path, {
        "provenir/__init__.py": "",
        "provenir/eval/__init__.py": "",
        "provenir/eval/a.py": "from provenir.eval import b\n",
        "provenir/eval/b.py": "def f():\n    import provenir.eval.c\n",
        "provenir/eval/c.py": "from provenir.eval.a import X\n",
        "provenir/eval/d.py": "from provenir.eval import a\n",
    })
    assert cycles(imports_of(root)) == [["provenir.eval.a", "provenir.eval.b", "provenir.eval.c", "provenir.eval.a"]]
