"""The import graph of umsrep/, sweeps/ and analysis/ has no cycles (STYLE.md).

Module-level imports only: the statements that run when a module is imported (class bodies,
``if``/``try``/``with`` blocks included; ``if TYPE_CHECKING:`` blocks and function bodies
excluded). ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to
``pkg``; importing ``pkg.sub`` is an edge to ``pkg.sub`` only (Python also runs
``pkg/__init__.py`` first, but a package importing its own submodules is the normal layout).

Imports inside functions are counted, not refused: STYLE.md allows one where it keeps a heavy
optional package (Ray, Plotly, ONNX, ...) off a light path. ``python tests/test_import_graph.py``
prints the cycles and the counts.
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("umsrep", "sweeps", "analysis")


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``PACKAGES``."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _module_level(body: list[ast.stmt]):
    """Import statements that run at import time, and function bodies (walked separately)."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield "module", node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    yield "function", inner
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _module_level(node.body)
            yield from _module_level(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody,
                          *(h.body for h in node.handlers)):
                yield from _module_level(block)
        elif isinstance(node, (ast.With, ast.For, ast.While, ast.ClassDef)):
            yield from _module_level(node.body)
            yield from _module_level(getattr(node, "orelse", []))


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_pkg: bool) -> list[str]:
    """The dotted names an import statement loads (before filtering to our modules)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:  # relative: strip `level` parts from the importing package
        pkg = module.split(".") if is_pkg else module.split(".")[:-1]
        pkg = pkg[: len(pkg) - (node.level - 1)]
        base = ".".join(pkg + ([base] if base else []))
    return [f"{base}.{a.name}" for a in node.names] + [base]


def import_graph() -> tuple[dict[str, set[str]], Counter]:
    """Module -> the modules it imports at module level; per module, its function-level
    imports of umsrep/sweeps/analysis modules and of other packages."""
    files = module_files()
    graph: dict[str, set[str]] = {m: set() for m in files}
    in_functions: Counter = Counter()
    for module, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_pkg = path.name == "__init__.py"
        for where, node in _module_level(tree.body):
            names = _targets(node, module, is_pkg)
            if where == "function":
                ours = any(n.split(".")[0] in PACKAGES for n in names)
                in_functions["internal" if ours else "third-party"] += 1
                continue
            if isinstance(node, ast.ImportFrom):  # `from pkg import sub` -> pkg.sub, else pkg
                subs = [n for n in names[:-1] if n in files]
                names = subs or [names[-1]]
            graph[module] |= {n for n in names if n in files and n != module}
    return graph, in_functions


def unexplained_lazy_imports() -> list[str]:
    """``path:line`` of each import inside a function with no comment saying why, on its line
    or on the line above (a comment over a block of imports covers the block)."""
    out = []
    for path in module_files().values():
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines), filename=str(path))
        for where, node in _module_level(tree.body):
            if where != "function":
                continue
            i = node.lineno - 1
            while i > 0 and lines[i - 1].lstrip().startswith(("from ", "import ")):
                i -= 1  # the first import of a block
            said = "#" in lines[node.lineno - 1] or lines[i - 1].lstrip().startswith("#") \
                or "#" in lines[i]
            if not said:
                out.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return out


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def test_find_cycles_finds_a_known_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert find_cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    graph, in_functions = import_graph()
    assert len(graph) > 50  # the walk found the packages
    cycles = find_cycles(graph)
    assert not cycles, "module-level import cycles (each line one cycle):\n" + "\n".join(
        " <-> ".join(c) for c in cycles)
    print(f"function-level imports: {in_functions['internal']} of umsrep/sweeps/analysis "
          f"modules, {in_functions['third-party']} of other packages")


def test_every_import_inside_a_function_says_why() -> None:
    """STYLE.md: an import inside a function only keeps a heavy or optional package (Ray, MLflow,
    ONNX Runtime, Plotly, torch on a CLI's light path) off a path that does not need it, and
    says so in a comment."""
    missing = unexplained_lazy_imports()
    assert not missing, "imports inside functions without a comment saying why:\n" + "\n".join(
        missing)


if __name__ == "__main__":
    graph, in_functions = import_graph()
    cycles = find_cycles(graph)
    for c in cycles:
        print("cycle:", " <-> ".join(c))
    print(f"{len(graph)} modules, {len(cycles)} cycle(s); function-level imports: "
          f"{in_functions['internal']} internal, {in_functions['third-party']} third-party")
    for where in unexplained_lazy_imports():
        print("unexplained import inside a function:", where)
    sys.exit(1 if cycles else 0)
