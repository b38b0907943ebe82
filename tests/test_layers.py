"""The import graph of `lbw_sim`: no circles, and imports only run down the layers.

Every module is parsed with `ast` (nothing is imported), and every import in it counts,
also those inside functions: a lazy import still ties two modules together. Layers, low
to high: errors/checks → traces → guard → sim, integrations → bench, studio → viz → cli.
Nothing in lbw_sim imports streamlit or the pages.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lbw_sim"
LAYERS = {"lbw_sim": 0, "lbw_sim.errors": 0, "lbw_sim.checks": 0, "lbw_sim.traces": 1,
          "lbw_sim.guard": 2, "lbw_sim.sim": 3, "lbw_sim.integrations": 3, "lbw_sim.bench": 4,
          "lbw_sim.studio": 4, "lbw_sim.viz": 5, "lbw_sim.cli": 6, "lbw_sim.__main__": 6}
FORBIDDEN = ("streamlit", "pages")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module `name` imports (absolute names; `from pkg import mod` resolves to mod)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.add(sub if sub in known else base)
    return out


def layer_of(name: str) -> int:
    """The layer of a module: its longest prefix in LAYERS."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in LAYERS:
            return LAYERS[".".join(parts[:i])]
    raise KeyError(name)


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt in edges and nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_every_module_has_a_layer():
    unplaced = [m for m in modules() if not any(m == k or m.startswith(k + ".")
                                                 for k in LAYERS if k != "lbw_sim")
                and m != "lbw_sim"]
    assert not unplaced, f"modules outside every layer: {unplaced}"


def test_no_import_circles():
    internal = {m: {i for i in deps if i.startswith("lbw_sim")} for m, deps in graph().items()}
    cycle = find_cycle(internal)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_imports_only_run_down_the_layers():
    upward = [f"{m} (layer {layer_of(m)}) imports {i} (layer {layer_of(i)})"
              for m, deps in graph().items() for i in sorted(deps)
              if i.startswith("lbw_sim") and layer_of(i) > layer_of(m)]
    assert not upward, "\n".join(upward)


def test_nothing_imports_streamlit_or_the_pages():
    bad = [f"{m} imports {i}" for m, deps in graph().items() for i in sorted(deps)
           if i.split(".")[0] in FORBIDDEN]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("source, problem", [
    ("from lbw_sim.viz import x\n", "upward"),
    ("def f():\n    import streamlit\n", "streamlit"),
])
def test_the_checks_can_fail(tmp_path, source, problem):
    """The graph sees lazy and upward imports (a guard module importing viz, streamlit)."""
    path = tmp_path / "probe.py"
    path.write_text(source)
    deps = imports_of("lbw_sim.guard.probe", path, set(modules()))
    if problem == "upward":
        assert any(layer_of(i) > layer_of("lbw_sim.guard.probe") for i in deps)
    else:
        assert "streamlit" in deps


def test_cycle_finder_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
