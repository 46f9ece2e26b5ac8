"""The package's import graph, read with `ast`: no cycle, and every arrow points down.

    commands -> report -> features -> setup -> formats / core -> errors

Every import counts: at module level, inside functions, under `if TYPE_CHECKING:`.
The core math (core/) imports no config, file format, rendering or CLI library and
does no file I/O and no printing; formats/ depends on numpy, errors and the standard
library only (optional libraries imported inside functions), and on core/names.py,
which imports nothing, for parameter names.
"""

from __future__ import annotations

import ast
import functools
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "lstm_diag"
STDLIB = set(sys.stdlib_module_names)

# What each layer must never import (lstm_diag subpackages, or top-level library names).
FORBIDDEN = {
    "core": {"setup", "features", "report", "commands", "formats", "cli",
             "click", "rich", "matplotlib", "yaml", "pydantic"},
    "formats": {"core", "setup", "features", "report", "commands", "cli"},  # but VOCABULARY
    "setup": {"features", "report", "commands", "cli"},
    "features": {"report", "commands", "cli"},
    "report": {"commands", "cli"},
    "errors": {"core", "formats", "setup", "features", "report", "commands", "cli"},
    "numfmt": {"core", "formats", "setup", "features", "report", "commands", "cli"},
}
# Modules of core/ that are vocabulary, not math: they import nothing at all (checked), so the
# file readers may name what they convert with them (one function for parameter names).
VOCABULARY = {"lstm_diag.core.names"}
# File I/O and printing, which the core math never does.
CORE_IO_MODULES = {"os", "pathlib", "tempfile", "shutil", "pickle", "io", "zipfile", "glob"}
CORE_IO_CALLS = {"open", "print", "load", "loadtxt", "save", "savez", "savez_compressed", "savetxt",
                 "fromfile", "tofile", "read_text", "write_text", "read_bytes", "write_bytes"}


@dataclass(frozen=True)
class Import:
    source: str  # importing module, e.g. lstm_diag.core.engine
    target: str  # imported module, absolute, e.g. lstm_diag.errors or numpy
    line: int
    in_function: bool


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


@functools.cache
def syntax_tree(path: Path) -> ast.Module:
    """A module's syntax tree, parsed once for every test of this file that reads it."""
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def _imports(path: Path) -> list[Import]:
    name = module_name(path)
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    tree = syntax_tree(path)
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend(Import(name, a.name, child.lineno, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    mod = ".".join(base + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                # `from . import engine` imports a module: record it, not the package
                for a in child.names:
                    sub = f"{mod}.{a.name}"
                    target = sub if (PKG.parent / (sub.replace(".", "/") + ".py")).exists() or (
                        PKG.parent / sub.replace(".", "/") / "__init__.py"
                    ).exists() else mod
                    found.append(Import(name, target, child.lineno, in_function))
            visit(child, inner)

    visit(tree, False)
    return found


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


@functools.cache
def graph() -> dict[str, list[Import]]:
    """module -> its imports, read once, when a test first asks (not at collection: every xdist
    worker collects this file, and parsing the package takes about a second)."""
    return {m: _imports(p) for m, p in all_modules().items()}


def layer(module: str) -> str:
    """lstm_diag.core.engine -> core; lstm_diag.errors -> errors; lstm_diag -> ''."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def where(i: Import) -> str:
    path = all_modules()[i.source].relative_to(PKG.parent)
    return f"{path}:{i.line} imports {i.target}" + (" (inside a function)" if i.in_function else "")


def test_the_graph_is_read():
    assert "lstm_diag.core.engine" in graph() and "lstm_diag.commands.analyze" in graph()
    targets = {i.target for i in graph()["lstm_diag.commands.analyze"]}
    assert "lstm_diag.features.analysis" in targets  # a function-level import
    assert "click" in targets
    assert "lstm_diag.core.engine" in {i.target for i in graph()["lstm_diag.features.analysis"]}


def test_no_import_cycle():
    internal = {
        m: sorted({_owner(i.target) for i in imps if _owner(i.target) and _owner(i.target) != m})
        for m, imps in graph().items()
    }
    # the package's __init__ lazily re-exports analyze; that is an entry point, not a layer
    internal["lstm_diag"] = []
    cycles = _cycles(internal)
    assert not cycles, "\n".join("import cycle among: " + ", ".join(c) for c in cycles)


def _owner(target: str) -> str | None:
    """The lstm_diag module an import resolves to (None outside the package)."""
    if target != "lstm_diag" and not target.startswith("lstm_diag."):
        return None
    while target not in graph() and "." in target:
        target = target.rpartition(".")[0]  # `from x import name`: the module x
    return target


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """The modules of each strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, []):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            strong(v)
    return out


@pytest.mark.parametrize("source_layer", sorted(FORBIDDEN))
def test_no_upward_import(source_layer):
    bad = []
    for imps in graph().values():
        for i in imps:
            if layer(i.source) != source_layer or (source_layer == "formats" and i.target in VOCABULARY):
                continue
            top = i.target.split(".")[0]
            name = layer(i.target) if top == "lstm_diag" else top
            if name in FORBIDDEN[source_layer]:
                bad.append(where(i))
    assert not bad, f"{source_layer}/ must not import {sorted(FORBIDDEN[source_layer])}:\n" + "\n".join(bad)


def test_vocabulary_modules_import_nothing():
    """formats/ may import them only because they import nothing (the stdlib aside)."""
    for m in VOCABULARY:
        assert m in graph(), m
        bad = [where(i) for i in graph()[m] if i.target.split(".")[0] not in STDLIB | {"__future__"}]
        assert not bad, "\n".join(bad)


def test_formats_depend_on_numpy_errors_and_stdlib_only():
    bad = []
    for imps in graph().values():
        for i in imps:
            if layer(i.source) != "formats":
                continue
            top = i.target.split(".")[0]
            if top == "lstm_diag":
                ok = layer(i.target) in ("errors", "formats") or i.target in VOCABULARY
            else:
                ok = top in STDLIB or top == "numpy" or top == "__future__" or i.in_function
            if not ok:
                bad.append(where(i))
    assert not bad, "formats/ may import numpy, errors and the standard library (others lazily):\n" + (
        "\n".join(bad)
    )


def test_core_does_no_file_io_and_no_printing():
    bad = []
    for m, p in all_modules().items():
        if layer(m) != "core":
            continue
        bad += [where(i) for i in graph()[m] if i.target.split(".")[0] in CORE_IO_MODULES]
        for node in ast.walk(syntax_tree(p)):
            if isinstance(node, ast.Call):
                f = node.func
                called = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
                if called in CORE_IO_CALLS:
                    bad.append(f"{p.relative_to(PKG.parent)}:{node.lineno} calls {called}()")
    assert not bad, "core/ is pure math (no files, no printing):\n" + "\n".join(bad)


def test_the_checks_catch_what_they_should():
    """The cycle finder and the layer rule on made-up graphs: a test that cannot fail is no test."""
    assert _cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]
    assert _cycles({"a": ["b"], "b": []}) == []
    assert layer("lstm_diag.core.engine") == "core" and layer("lstm_diag.errors") == "errors"
