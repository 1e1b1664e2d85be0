"""Structure checks CI runs (scripts/test.sh): no import cycles among pyseg's modules, and no Python function
over MAX_LINES lines unless the line before its ``def`` says why (a comment starting ``# long:``).

    python scripts/check_structure.py          # exit 1 and a list of what is wrong, else one "ok" line
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pyseg"
MAX_LINES = 120


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """pyseg modules that ``path`` imports anywhere in it (lazy imports inside functions count too)."""
    me = module_name(path)
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = me.split(".") if is_package else me.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)  # "from pkg import submodule"
    return {m for m in found if m in modules and m != me}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def long_functions(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            n = node.end_lineno - first + 1
            reason = lines[first - 2].strip() if first >= 2 else ""
            if n > MAX_LINES and not reason.startswith("# long:"):
                out.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} is {n} lines (over {MAX_LINES}, "
                           "no '# long: reason' above it)")
    return out


def main() -> int:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in files}
    graph = {module_name(p): imports_of(p, modules) for p in files}
    problems = [f"import cycle: {' <-> '.join(c)}" for c in cycles(graph)]
    for p in files:
        problems += long_functions(p)
    if problems:
        print("\n".join(problems))
        return 1
    print(f"ok: {len(modules)} modules, no import cycles, no function over {MAX_LINES} lines without a reason")
    return 0


if __name__ == "__main__":
    sys.exit(main())
