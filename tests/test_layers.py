"""The package's house rules, read off the source: the layer order of docs/ARCHITECTURE.md (no module imports a
higher layer), no import cycle (imports inside functions count), no module over 500 lines, and a configuration
that is checked without importing torch."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "learnroot"

#: Layers, lowest first: a module may import its own layer and the layers below (docs/ARCHITECTURE.md). A module
#: belongs to the first entry whose name or package it is.
LAYERS = [
    ("foundation", ["learnroot", "learnroot.params", "learnroot.registry", "learnroot.lazy", "learnroot.groups", "learnroot.seeds", "learnroot.paths", "learnroot.sharding",
                    "learnroot.normalisation", "learnroot.layers", "learnroot.openmp", "learnroot.allocator"]),
    ("rules", ["learnroot.rules", "learnroot.conservation", "learnroot.canonizers", "learnroot.graph",
               "learnroot.explanation", "learnroot.transformers.vit"]),
    ("science", ["learnroot.methods", "learnroot.metrics", "learnroot.attribution", "learnroot.transformers",
                 "learnroot.models", "learnroot.data", "learnroot.inputs"]),
    ("config", ["learnroot.options", "learnroot.config"]),
    ("orchestration", ["learnroot.runner", "learnroot.outputs", "learnroot.manifest", "learnroot.memory",
                       "learnroot.explainer", "learnroot.api", "learnroot.summary", "learnroot.toy"]),
    ("commands", ["learnroot.cli", "learnroot.preflight", "learnroot.train", "learnroot.evaluate_model", "learnroot.report",
                  "learnroot.figures", "learnroot.table", "learnroot.paired"]),
]


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (packages by their ``__init__``)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        found[name[: -len(".__init__")] if name.endswith(".__init__") else name] = path
    return found


def imports(name: str, path: Path, known: dict) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its source (functions included)."""
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            parts = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
            base = ".".join(parts[: len(parts) - node.level + 1] + [node.module] if node.level and node.module
                            else parts[: len(parts) - node.level + 1]) if node.level else (node.module or "")
            candidates = [base] + [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        targets |= {item for item in candidates if item in known}
    return {item for item in targets if item != name and not name.startswith(item + ".")}


def layer_of(name: str) -> int:
    """Index of the layer a module belongs to (the most specific entry that names it or its package)."""
    best, length = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > length:
                best, length = index, len(prefix)
    if best is None:
        raise AssertionError(f"{name} is in no layer: add it to LAYERS here and to docs/ARCHITECTURE.md")
    return best


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def test_every_module_has_a_layer_and_imports_nothing_above_it():
    upward = []
    for name, targets in graph().items():
        for target in targets:
            if name in ("learnroot",):  # the package's own __init__ re-exports the public API lazily
                continue
            if layer_of(target) > layer_of(name):
                upward.append(f"{name} ({LAYERS[layer_of(name)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})")
    assert not upward, "imports that run up the layers:\n" + "\n".join(sorted(upward))


def test_no_import_cycles():
    edges = graph()
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(node):  # Tarjan's strongly connected components
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                cycles.append(" -> ".join(sorted(component)))

    sys.setrecursionlimit(10000)
    for node in edges:
        if node not in index:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_module_over_500_lines():
    long = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    assert not {name: lines for name, lines in long.items() if lines > 500}


@pytest.mark.parametrize("overrides", [["batch_size=0"], ["method=lrp_epsilon", "method.epsilon=-1"],
                                       ["metrics.aopc_fraction=2"]])
def test_a_bad_value_is_found_without_importing_torch(overrides):
    code = ("import sys\nfrom learnroot.config import ConfigError, compose, to_options\n"
            f"try:\n    to_options(compose({overrides!r}), registered=False)\nexcept ConfigError as error:\n"
            "    print('refused:', error)\nprint('torch imported:', 'torch' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "refused:" in result.stdout, result.stderr
    assert "torch imported: False" in result.stdout
