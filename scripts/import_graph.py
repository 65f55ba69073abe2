"""The import graph of a package, read with ``ast`` (nothing is imported).

Prints the modules, the edges between them (module-level and function-local), the circles (strongly
connected components of the graph counting both kinds), the function-local imports with their reason (a
``# lazy: <reason>`` comment on the import line), and the imports that run "back up a layer": a module of a
subpackage importing a module outside it that imports the subpackage back, directly or through others.

    python scripts/import_graph.py [package_dir]     # default: normexp
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

REASON = re.compile(r"#\s*lazy:\s*(\S+)")


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the module imported, or the top-level name for a third-party import
    line: int
    local: bool  # inside a function body
    reason: str | None  # the word after '# lazy:'


def module_names(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under ``package`` (a package by its __init__)."""
    names = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imported_modules(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known) -> list[str]:
    """The modules an import statement names: ``from a import b`` is a.b when that is a module, else a."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        parent = module.split(".")
        parent = parent[: len(parent) - node.level + (1 if is_package else 0)]
        base = ".".join(parent + ([base] if base else []))
    subs = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known]
    return subs + ([base] if len(subs) < len(node.names) else [])


def function_imports(tree: ast.AST):
    """(import node, inside a function?) for every import statement in ``tree``."""

    def walk(node, local):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, local
            inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            yield from walk(child, inner)

    yield from walk(tree, False)


def read_imports(package: Path) -> tuple[dict[str, Path], list[Import]]:
    files = module_names(package)
    imports = []
    for module, path in files.items():
        text = path.read_text()
        lines = text.splitlines()
        for node, local in function_imports(ast.parse(text)):
            match = REASON.search(lines[node.lineno - 1])
            reason = match.group(1) if match else None
            for target in imported_modules(node, module, path.name == "__init__.py", files):
                if not target.startswith(package.name + ".") and target != package.name:
                    target = target.split(".")[0]
                imports.append(Import(module, target, node.lineno, local, reason))
    return files, imports


def circles(nodes, edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
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
            if len(component) > 1 or v in edges.get(v, ()):
                found.append(sorted(component))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for v in nodes:
        if v not in index:
            visit(v)
    return sorted(found)


def reachable(start: str, edges: dict[str, set[str]]) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for w in edges.get(todo.pop(), ()):
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def subpackage(module: str, root: str) -> str | None:
    """The first-level subpackage that holds ``module`` (normexp.probes.guard -> normexp.probes)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 and parts[0] == root else None


def back_up_edges(internal: list[Import], edges, root: str, packages: set[str]) -> list[Import]:
    """Imports from inside a subpackage to a module outside it that reaches the subpackage again."""
    found = []
    for imp in internal:
        package = subpackage(imp.source, root)
        if package is None or package not in packages or imp.target.startswith(package):
            continue
        reached = reachable(imp.target, edges) | {imp.target}
        if any(m == package or m.startswith(package + ".") for m in reached):
            found.append(imp)
    return found


@dataclass
class Graph:
    modules: dict[str, Path]
    imports: list[Import]  # every import statement's targets, third-party ones by their top-level name
    internal: list[Import]  # those of the package's own modules
    circles: list[list[str]]
    back_up: list[Import]


def analyse(package: Path) -> Graph:
    modules, imports = read_imports(package)
    internal = [i for i in imports if i.target in modules and i.target != i.source]
    edges = defaultdict(set)
    for imp in internal:
        edges[imp.source].add(imp.target)
    packages = {m for m, path in modules.items() if path.name == "__init__.py" and m.count(".") == 1}
    return Graph(modules, imports, internal, circles(modules, edges),
                 back_up_edges(internal, edges, package.name, packages))


def report(package: Path) -> None:
    graph = analyse(package)
    kinds = defaultdict(set)
    for imp in graph.internal:
        kinds[imp.source, imp.target].add("local" if imp.local else "module")
    kind_counts = Counter("both" if len(k) == 2 else next(iter(k)) for k in kinds.values())
    print(f"modules: {len(graph.modules)}")
    print(f"edges: {len(kinds)} (module-level only {kind_counts['module']}, function-local only "
          f"{kind_counts['local']}, both {kind_counts['both']})")
    print(f"circles: {len(graph.circles)}")
    for component in graph.circles:
        print("  " + " <-> ".join(component))
    local = [i for i in graph.imports if i.local]
    for label, chosen in ((f"{package.name}.*", [i for i in local if i in graph.internal]),
                          ("other", [i for i in local if i not in graph.internal])):
        reasons = Counter(i.reason or "(no reason)" for i in chosen)
        print(f"function-local imports of {label}: {len(chosen)} "
              f"({', '.join(f'{r}: {n}' for r, n in sorted(reasons.items()))})")
        for imp in chosen:
            reason = f"  [lazy: {imp.reason}]" if imp.reason else ""
            print(f"  {imp.source}:{imp.line} -> {imp.target}{reason}")
    print(f"imports back up a layer: {len(graph.back_up)}")
    for imp in graph.back_up:
        kind = "function-local" if imp.local else "module-level"
        print(f"  {imp.source}:{imp.line} -> {imp.target} ({kind})")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", nargs="?", default="normexp", type=Path)
    report(parser.parse_args(argv).package.resolve())


if __name__ == "__main__":
    main()
