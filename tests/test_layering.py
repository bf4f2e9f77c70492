"""The layers import only downward (core <- passes <- runtime <- library <- cli) and the module
import graph has no cycles. Read from the source with `ast`, so nothing is imported: every import
statement counts, at module level, inside functions and under `if TYPE_CHECKING:`."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"onnxwootz": "onnxwootz", "passes": "onnxwootz.passes", "runtime": "onnxwootz.runtime"}
"""Source folder -> the package it is installed as (pyproject's package-dir)."""

ALLOWED = {
    "core": {"core"},
    "passes": {"core", "passes"},
    "runtime": {"core", "passes", "runtime"},
    "library": {"core", "passes", "runtime", "library"},
    "cli": {"core", "passes", "runtime", "library", "cli"},
}
"""Which layers a module of each layer may import."""


def layer(module: str) -> str:
    for name in ("core", "passes", "runtime", "cli"):
        prefix = f"onnxwootz.{name}"
        if module == prefix or module.startswith(prefix + "."):
            return name
    return "library"


def sources() -> dict[str, tuple[str, bool]]:
    """Module name -> (source text, whether it is a package's __init__)."""
    found = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            name = ".".join([package] + (parts[:-1] if is_package else parts))
            found[name] = (path.read_text(), is_package)
    return found


def import_graph(modules: dict[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """Module -> the onnxwootz modules it imports. `from a.b import c` means module a.b.c when
    there is one, else a.b; a name that is no module resolves to its nearest enclosing module."""

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, (text, is_package) in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    package = module.split(".") if is_package else module.split(".")[:-1]
                    package = package[: len(package) - node.level + 1]
                    base = ".".join(package + ([base] if base else []))
                names = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                if name == "onnxwootz" or name.startswith("onnxwootz."):
                    target = resolve(name)
                    if target is not None and target != module:
                        targets.add(target)
        graph[module] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path (first module repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if start in state:
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


GRAPH = import_graph(sources())


def test_each_layer_imports_only_the_layers_below_it() -> None:
    wrong = [f"{module} ({layer(module)}) imports {target} ({layer(target)})"
             for module, targets in sorted(GRAPH.items()) for target in sorted(targets)
             if layer(target) not in ALLOWED[layer(module)]]
    assert wrong == []


def test_module_imports_have_no_cycles() -> None:
    cycle = find_cycle(GRAPH)
    assert cycle is None, " -> ".join(cycle)


def test_the_scan_sees_every_module_and_imports_inside_functions() -> None:
    assert {"onnxwootz.core.errors", "onnxwootz.passes.prune", "onnxwootz.runtime.sessions",
            "onnxwootz.cli.prune"} <= set(GRAPH)
    assert "onnxwootz.core.errors" in GRAPH["onnxwootz.runtime.sessions"]
    assert "onnxwootz.runtime.torch_graph" in GRAPH["onnxwootz.runtime"]  # inside __getattr__
    assert "onnxwootz.pipeline" in GRAPH["onnxwootz.cli.prune"]  # inside the command


def test_a_cycle_or_an_upward_import_hidden_in_a_function_is_found() -> None:
    modules = {
        "onnxwootz.core": ("", True),
        "onnxwootz.core.a": ("def f():\n    from onnxwootz.runtime import b\n", False),
        "onnxwootz.runtime": ("", True),
        "onnxwootz.runtime.b": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                "    from ..core.a import f\n", False),
    }
    graph = import_graph(modules)
    assert graph["onnxwootz.core.a"] == {"onnxwootz.runtime.b"}
    assert graph["onnxwootz.runtime.b"] == {"onnxwootz.core.a"}
    assert find_cycle(graph) == ["onnxwootz.core.a", "onnxwootz.runtime.b", "onnxwootz.core.a"]
    assert "runtime" not in ALLOWED[layer("onnxwootz.core.a")]
