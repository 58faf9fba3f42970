"""The package's import graph has no cycle, and no function-local import hides one.

Edges come from the source (``ast``), not from importing: ``from a.b import c`` is an edge to
``a.b.c`` when that is a module, else to ``a.b``. Imports inside functions are kept local for
start-up time (the CLI's ``--help``, torch); the second test proves none of them is there to
dodge a cycle, by checking the graph with every one of them moved to module level.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mlx_caption"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _target(name: str) -> str | None:
    """The package module an imported dotted name lives in (None: outside the package)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _edges(tree: ast.Module, module: str, local: bool) -> set[str]:
    """Module-level imports of ``module`` (with ``local``: also those inside functions)."""
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return  # never executed
        if isinstance(node, (ast.Import, ast.ImportFrom)) and (local or not in_function):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                    base = f"{base}.{node.module}" if node.module else base
                names = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                    for a in node.names
                ]
            found.update(t for t in map(_target, names) if t and t != module)
        inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, False)
    return found


def _graph(local: bool) -> dict[str, set[str]]:
    return {m: _edges(ast.parse(p.read_text()), m, local) for m, p in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return out


def test_the_graph_is_read_right():
    graph = _graph(local=False)
    assert "mlx_caption.loading" in graph["mlx_caption.bridge"]
    assert "mlx_caption.models.clip.config" in graph["mlx_caption.models.clip.vision"]
    assert "mlx_caption.generate.logits" in graph["mlx_caption.generate.step"]
    # And the cycle finder finds one where there is one.
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle():
    assert _cycles(_graph(local=False)) == []


def test_no_function_local_import_dodges_a_cycle():
    assert _cycles(_graph(local=True)) == []
