"""The package's structure, read from the code: the layer order of docs/architecture.md holds, the import graph
has no circle, only the CLI imports the tools, and imports inside functions are kept for optional packages."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "lbdt"
# packages a function may import where it needs them (extras, or heavy and used by one feature)
OPTIONAL = ("gradio", "onnx", "onnxruntime", "onnxscript", "requests", "gdown", "pycocotools", "matplotlib",
            "torch.utils.tensorboard", "pandas")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(encoding="utf-8")) for p in sorted(PACKAGE.rglob("*.py"))}


def imported(node: ast.Import | ast.ImportFrom, here: str, known: set[str]) -> list[str]:
    """The lbdt modules an import statement loads (`from lbdt.x import y` is lbdt.x.y when that is a module)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            base = ".".join(here.split(".")[: -node.level] + ([base] if base else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    return [n for n in names if n in known]


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: {m for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                   for m in imported(node, name, known) if m != name}
            for name, tree in mods.items()}


def layers() -> list[list[str]]:
    """The layer block of docs/architecture.md (`NN  prefix prefix ...` rows), as a list indexed by layer number."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = text.split("<!-- layers -->", 2)[1]
    rows = {int(m.group(1)): m.group(2).split()
            for m in (re.match(r"\s*(\d+)\s+(.*)", line) for line in block.splitlines()) if m}
    assert sorted(rows) == list(range(len(rows))), "layers are numbered 0..n without gaps"
    return [rows[i] for i in range(len(rows))]


def layer_of(module: str, order: list[list[str]]) -> int:
    """The layer of the longest prefix naming `module` (`data` covers lbdt.data.*, `data.build` overrides it)."""
    best = (-1, -1)
    for i, names in enumerate(order):
        for name in names:
            full = f"lbdt.{name}"
            if (module == full or module.startswith(full + ".")) and len(full) > best[1]:
                best = (i, len(full))
    if best[0] < 0:
        raise AssertionError(f"{module} is in no layer of docs/architecture.md")
    return best[0]


def test_every_module_has_a_layer_and_imports_only_from_lower_or_its_own_layer():
    order = layers()
    assert len(order) > 10
    upward = []
    for here, targets in graph().items():
        if here == "lbdt":  # the package's lazy public names (no static imports)
            continue
        for there in targets - {"lbdt"}:  # `from lbdt import __version__`
            if layer_of(there, order) > layer_of(here, order):
                upward.append(f"{here} -> {there}")
    assert upward == []


def test_the_import_graph_has_no_circle():
    g = graph()
    index, low, stack, on_stack, circles, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in g[v]:
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
            if len(component) > 1:
                circles.append(sorted(component))

    for v in g:
        if v not in index:
            visit(v)
    assert circles == []


def test_only_the_cli_imports_the_tools():
    offenders = [f"{here} -> {there}" for here, targets in graph().items() for there in targets
                 if there.startswith("lbdt.tools") and not (here == "lbdt.cli" or here.startswith("lbdt.tools"))]
    assert offenders == []


def test_imports_inside_functions_only_in_the_cli_and_for_optional_packages():
    found = []
    for name, tree in modules().items():
        if name in ("lbdt.cli", "lbdt"):
            continue
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    mods = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    mods = [node.module or ""]
                else:
                    continue
                for m in mods:
                    if not any(m == o or m.startswith(o + ".") for o in OPTIONAL):
                        found.append(f"{name}:{node.lineno}: {m}")
    assert found == []


@pytest.mark.parametrize("layer, target, expected", [
    ([["errors"], ["data"], ["data.build"]], "lbdt.data.build", 2),
    ([["errors"], ["data"], ["data.build"]], "lbdt.data.sources.a2d", 1),
])
def test_layer_of_takes_the_longest_prefix(layer, target, expected):
    assert layer_of(target, layer) == expected
