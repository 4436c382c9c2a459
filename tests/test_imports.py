"""The package's layers import only downward: no import cycle between its modules, nor between its
sub-packages (``t3``, ``s3gen``, ``voice``, ...), counting every import, also those inside
functions and under ``TYPE_CHECKING``."""

from __future__ import annotations

import ast
from pathlib import Path

import vllm_chatterbox

PACKAGE_DIR = Path(vllm_chatterbox.__file__).parent


def module_imports() -> dict[str, set[str]]:
    """Module name -> the package's modules it imports (a name imported from a package that is one
    of its submodules counts as that submodule)."""
    paths = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def resolve(name: str) -> str:
        while name not in paths:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, path in paths.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    base = ".".join(here[: len(here) - node.level + 1] + ([base] if base else []))
                targets.update(f"{base}.{alias.name}" for alias in node.names)
        graph[name] = {resolve(t) for t in targets if t.split(".")[0] == PACKAGE_DIR.name} - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_between_modules():
    assert cycles(module_imports()) == []


def test_no_import_cycle_between_subpackages():
    def layer(module: str) -> str:
        return ".".join(module.split(".")[:2])

    graph: dict[str, set[str]] = {}
    for module, targets in module_imports().items():
        graph.setdefault(layer(module), set()).update(layer(t) for t in targets if layer(t) != layer(module))
    # The package's __init__ only re-exports the public names, lazily.
    graph.pop(PACKAGE_DIR.name, None)
    assert cycles(graph) == []


def test_the_check_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
