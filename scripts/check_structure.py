"""Structure checks CI runs (scripts/test.sh): no import cycles among pyseg's modules, no Python function
over MAX_LINES lines unless the line before its ``def`` says why (a comment starting ``# long:``), and no
C++/CUDA function in csrc/ over MAX_LINES lines unless the line before its signature starts ``// long:``.

    python scripts/check_structure.py          # exit 1 and a list of what is wrong, else one "ok" line
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pyseg"
CSRC = ROOT / "csrc"
CXX_SUFFIXES = (".h", ".cpp", ".cu", ".cuh")
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


def blank_comments_and_strings(text: str) -> str:
    """``text`` with comments, string and char literals and preprocessor lines blanked (newlines kept)."""
    out, i, n = [], 0, len(text)
    at_line_start = True
    while i < n:
        c = text[i]
        if at_line_start and c == "#":  # a preprocessor line, with its continuations
            while i < n and text[i] != "\n":
                if text[i] == "\\" and i + 1 < n and text[i + 1] == "\n":
                    out.append(" \n")
                    i += 2
                    continue
                out.append(" ")
                i += 1
            continue
        if c == "/" and text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
        elif c == "/" and text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            j += 1
        else:
            out.append(c)
            if c == "\n":
                at_line_start = True
            elif not c.isspace():
                at_line_start = False
            i += 1
            continue
        out.append(re.sub(r"[^\n]", " ", text[i:j]))
        i = j
    return "".join(out)


_CONTROL = re.compile(r"^(if|for|while|switch|catch|else|do|try|return)\b")
_NOT_NAMES = {"__attribute__", "alignas", "decltype", "__launch_bounds__", "__align__", "sizeof", "static_assert"}


def _function_name(header: str) -> str | None:
    """The name of the function whose body starts after ``header``, or None when the brace opens no function
    (a namespace, class, initialiser, control statement or lambda)."""
    h = " ".join(header.split())
    if not h or _CONTROL.match(h) or re.search(r"\]\s*(\([^()]*\))?\s*(mutable\s*)?(->[^{}]*)?$", h):
        return None
    while h.startswith("template"):  # drop template <...> prefixes (nested angle brackets)
        depth, j = 0, h.find("<")
        for j in range(j, len(h)):
            depth += {"<": 1, ">": -1}.get(h[j], 0)
            if depth == 0:
                break
        h = h[j + 1:].lstrip()
    h = re.sub(r"\s*(const|noexcept|override|final|mutable|volatile|&|&&)\s*$", "", h)
    h = re.sub(r"\s*->\s*[\w:<>,\s*&]+$", "", h)  # trailing return type
    if not h.endswith(")") or re.search(r"\b(namespace|struct|class|union|enum)\b[^()]*$", h.split("(")[0]):
        return None
    for m in re.finditer(r"([~\w:]+|operator\s*[^\s(]+)\s*\(", h):
        name = m.group(1)
        if name.split("::")[-1] not in _NOT_NAMES:
            return name
    return None


def cxx_functions(text: str) -> list[tuple[str, int, int]]:
    """(name, first line, last line) of each outermost function body in C++/CUDA ``text`` (1-based lines)."""
    code = blank_comments_and_strings(text)
    found, stack, header_start = [], [], 0  # stack: (is_function, name, first line) per open brace
    for i, c in enumerate(code):
        if c in ";}":
            if c == "}" and stack:
                is_fn, name, first = stack.pop()
                if is_fn:
                    found.append((name, first, code.count("\n", 0, i) + 1))
            header_start = i + 1
        elif c == "{":
            inside = any(f for f, _, _ in stack)
            header = code[header_start:i]
            name = None if inside else _function_name(header)
            start = header_start + len(header) - len(header.lstrip())
            stack.append((name is not None, name, code.count("\n", 0, start) + 1))
            header_start = i + 1
    return found


def long_cxx_functions(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    out = []
    for name, first, last in cxx_functions(text):
        n = last - first + 1
        reason = lines[first - 2].strip() if first >= 2 else ""
        if n > MAX_LINES and not reason.startswith("// long:"):
            out.append(f"{path.relative_to(ROOT)}:{first} {name} is {n} lines (over {MAX_LINES}, "
                       "no '// long: reason' above it)")
    return out


def main() -> int:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in files}
    graph = {module_name(p): imports_of(p, modules) for p in files}
    problems = [f"import cycle: {' <-> '.join(c)}" for c in cycles(graph)]
    for p in files:
        problems += long_functions(p)
    cxx = sorted(p for p in CSRC.rglob("*") if p.suffix in CXX_SUFFIXES)
    for p in cxx:
        problems += long_cxx_functions(p)
    if problems:
        print("\n".join(problems))
        return 1
    print(f"ok: {len(modules)} modules and {len(cxx)} C++/CUDA files, no import cycles, no function over "
          f"{MAX_LINES} lines without a reason")
    return 0


if __name__ == "__main__":
    sys.exit(main())
