"""Find import cycles inside a package: ``python -m pd_plugins._devtools.import_cycles [PACKAGE_DIR]``.

The package's modules are parsed (never imported) and every import statement naming one of them
is an edge: ``import a.b``, ``from a import b``, relative imports, and imports at any depth --
module level, inside functions (a lazy import is still a dependency of the design) and under
``if TYPE_CHECKING:`` (an annotation names the module it comes from just as much). Left out, by
design: the parent packages Python runs implicitly (``import a.b.c`` runs ``a/__init__`` and
``a/b/__init__``; every module would otherwise depend on its package's ``__init__``), and
imports by string (``importlib.import_module``, lazy ``"module:attr"`` registry factories), which
are the plugin host's extension points rather than static dependencies.

``from a import name`` is an edge to ``a.name`` when that is a module, else to ``a`` itself.

Each cycle is reported as a path, ``a -> b -> c -> a``, with where each edge comes from; every
edge that lies on some cycle appears in at least one reported path. Exit status: 1 when there is
a cycle, 0 when there is none.
"""
from __future__ import annotations

import ast
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional


@dataclass(frozen=True)
class Import:
    """One import statement of ``source`` that names the package's module ``target``."""

    source: str
    target: str
    file: str
    line: int
    where: str  # "module", "function" (lazy) or "type-checking"

    def describe(self) -> str:
        return f"{self.file}:{self.line}" + ("" if self.where == "module" else f" ({self.where})")


def module_names(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the package at ``package_dir``."""
    package_dir = Path(package_dir).resolve()
    names = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST) -> Iterator[tuple[ast.stmt, str]]:
    """Every ``import``/``from ... import`` node with where it sits (the innermost reason wins)."""

    def walk(node: ast.AST, where: str):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, where
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                yield from walk(child, "function")
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    yield from walk(ast.Module(body=[stmt], type_ignores=[]), "type-checking")
                for stmt in child.orelse:
                    yield from walk(ast.Module(body=[stmt], type_ignores=[]), where)
            else:
                yield from walk(child, where)

    yield from walk(tree, "module")


def _known(name: str, modules: dict) -> Optional[str]:
    """``name`` or its longest prefix that is one of ``modules`` (None outside the package)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in modules:
            return candidate
    return None


def _targets(node: ast.stmt, module: str, is_package: bool, modules: dict) -> list[str]:
    if isinstance(node, ast.Import):
        return [t for t in (_known(alias.name, modules) for alias in node.names) if t]
    if node.level:  # relative: from the module's own package, one level up per extra dot
        package = module.split(".") if is_package else module.split(".")[:-1]
        base = package[: len(package) - (node.level - 1)]
        origin = ".".join(base + ([node.module] if node.module else []))
    else:
        origin = node.module or ""
    out = []
    for alias in node.names:
        submodule = f"{origin}.{alias.name}"
        target = submodule if submodule in modules else _known(origin, modules)
        if target:
            out.append(target)
    return out


def import_graph(package_dir) -> dict[str, list[Import]]:
    """Module -> its imports of the package's own modules (self-imports left out)."""
    modules = module_names(Path(package_dir))
    root = Path(package_dir).resolve().parent
    graph: dict[str, list[Import]] = {m: [] for m in modules}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        for node, where in _import_nodes(tree):
            for target in _targets(node, module, is_package, modules):
                if target != module:
                    graph[module].append(Import(module, target, str(path.relative_to(root)), node.lineno, where))
    return graph


def _strong_components(succ: dict[str, set]) -> list[set]:
    """Tarjan's strongly connected components (iterative)."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]
    for start in succ:
        if start in index:
            continue
        work = [(start, iter(sorted(succ[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        comp.add(member)
                        if member == node:
                            break
                    out.append(comp)
            elif child not in index:
                index[child] = low[child] = counter[0]
                counter[0] += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(succ[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return out


def _shortest_path(succ: dict[str, set], start: str, goal: str, allowed: set) -> list[str]:
    previous, queue = {start: None}, deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            path = []
            while node is not None:
                path.append(node)
                node = previous[node]
            return path[::-1]
        for nxt in sorted(succ[node]):
            if nxt in allowed and nxt not in previous:
                previous[nxt] = node
                queue.append(nxt)
    raise AssertionError(f"{goal} is not reachable from {start} inside its component")


def find_cycles(graph: dict[str, list[Import]]) -> list[list[str]]:
    """Cycles as paths ``[a, b, ..., a]``: for each edge inside a strongly connected component, the
    shortest cycle through it (duplicates dropped), so every edge on a cycle is in some path."""
    succ = {m: {i.target for i in imports} for m, imports in graph.items()}
    cycles, seen = [], set()
    for comp in _strong_components(succ):
        if len(comp) < 2:
            continue
        for a in sorted(comp):
            for b in sorted(succ[a] & comp):
                ring = [a] + _shortest_path(succ, b, a, comp)[:-1]
                turn = ring.index(min(ring))
                ring = ring[turn:] + ring[:turn]
                if tuple(ring) not in seen:
                    seen.add(tuple(ring))
                    cycles.append(ring + [ring[0]])
    return cycles


def describe_cycle(graph: dict[str, list[Import]], cycle: list[str]) -> str:
    """``a -> b -> a`` and, for each edge, where it is imported."""
    lines = [" -> ".join(cycle)]
    for a, b in zip(cycle, cycle[1:]):
        sites = ", ".join(dict.fromkeys(i.describe() for i in graph[a] if i.target == b))
        lines.append(f"    {a} -> {b}: {sites}")
    return "\n".join(lines)


def report(package_dir) -> tuple[list[list[str]], str]:
    """``(cycles, text)`` for the package at ``package_dir``."""
    graph = import_graph(package_dir)
    cycles = find_cycles(graph)
    if not cycles:
        return cycles, f"no import cycles among {len(graph)} modules of {Path(package_dir).resolve().name}"
    text = "\n".join(describe_cycle(graph, c) for c in cycles)
    return cycles, f"{len(cycles)} import cycle(s):\n{text}"


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    package_dir = Path(argv[0]) if argv else Path(__file__).resolve().parents[1]
    if not (package_dir / "__init__.py").is_file():
        print(f"import_cycles: {package_dir} is not a package (no __init__.py)", file=sys.stderr)
        return 2
    cycles, text = report(package_dir)
    print(text)
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
