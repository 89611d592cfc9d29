"""The import graph of src/llara: dependencies point down the layers of docs/architecture.md and
nothing imports in a circle, counting imports inside functions and under TYPE_CHECKING too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "llara"

# Bottom to top; a module may import its own layer or any layer below, never one above.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("llara.version", "llara.errors", "llara.compat", "llara.settings"),
    ("llara.data",),
    ("llara.modeling", "llara.testing"),
    ("llara.inference",),
    ("llara.retrieval",),
    ("llara.training",),
    ("llara.scoring", "llara.calibration", "llara.evaluation", "llara.comparison"),
    ("llara.integrations", "llara.serving", "llara.reporting", "llara.st_module"),
    ("llara.experiments",),
    ("llara.cli", "llara.__main__", "llara"),  # the package root re-exports LlaraEncoder (lazily)
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(name: str) -> str | None:
    """The llara module an imported name lives in (a name imported from a package may be a submodule)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str) -> set[str]:
    """Every llara module `module` imports, at the top, in functions, anywhere."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{a.name}" for a in node.names]  # resolve() falls back to `base`
        else:
            continue
        for name in names:
            if name == "llara" or name.startswith("llara."):
                target = resolve(name)
                if target and target != module:
                    found.add(target)
    return found


def layer(module: str) -> int:
    best = None
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (i, len(prefix))
    assert best is not None, f"{module} is in no layer of tests/test_architecture.py (and docs/architecture.md)"
    return best[0]


GRAPH = {m: imports(m) for m in MODULES}


def test_every_module_has_a_layer():
    for module in MODULES:
        layer(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module):
    upward = sorted(t for t in GRAPH[module] if layer(t) > layer(module))
    assert not upward, f"{module} (layer {layer(module)}) imports {upward} from a layer above"


def test_no_import_cycles():
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for t in sorted(GRAPH[m]):
            if state.get(t) == 1:
                cycle = path[path.index(t) :] + [t]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        path.pop()
        state[m] = 2

    for m in sorted(MODULES):
        if m not in state:
            visit(m)


def test_the_checker_sees_imports_inside_functions(tmp_path):
    # guard against a checker that silently finds nothing
    assert "llara.inference.encoder" in GRAPH["llara.training.mining"]  # imported inside retrieve()
    assert "llara.modeling.embedder" in GRAPH["llara.inference.encoder"]


def test_architecture_doc_names_every_module():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text(encoding="utf-8")
    skip = ("__init__.py", "__main__.py")
    files = [p.relative_to(PACKAGE).as_posix() for p in MODULES.values() if p.name not in skip]
    missing = [f for f in files if f"`{f}`" not in doc]
    assert not missing, f"docs/architecture.md has no line for {missing}"
