"""Imports point one way (ARCHITECTURE.md): the CLI and its commands → the pipeline and what reads its rows → the
variant → the techniques → training, data, formats, models → leaves; `compress` and `adb_bench` never import each
other. Read from the source with `ast`, function-level imports included."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Top to bottom; a module may import its own rank and the ranks below it. A module's rank is that of the longest
# prefix listed.
RANKS = [
    ["cli", "compress.commands"],
    ["compress.pipeline", "compress.results", "compress.report", "compress.plots", "compress.search",
     "compress.progress", "compress.tracking"],
    ["compress.variant"],
    ["compress.techniques"],
    ["compress.train", "compress.data", "compress.formats", "compress.models", "compress.accel", "compress.config",
     "compress.metrics"],
    ["compress", "compress.errors", "compress.cache", "compress.machine", "compress.isolate", "compress.latency",
     "compress.flags", "compress.pareto", "compress.allocation", "compress.profile"],
]  # fmt: skip
APART = ("compress", "adb_bench")  # neither imports the other (cli.py joins them)


def rank(module: str) -> int | None:
    """The rank of a module of this project (None for adb_bench and other packages)."""
    found = [(len(p), r) for r, names in enumerate(RANKS) for p in names if module == p or module.startswith(p + ".")]
    return max(found)[1] if found else None


def imported(source: str) -> set[str]:
    """The absolute module names a module's source imports (`from a import b` gives a and a.b)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return names


def upward(sources: dict[str, str]) -> list[str]:
    """`importer → imported` for every import that points up a rank or across compress / adb_bench."""
    found = []
    for module, source in sources.items():
        for name in sorted(imported(source)):
            mine, theirs = rank(module), rank(name)
            crosses = {module.split(".")[0], name.split(".")[0]} == set(APART)
            if crosses or (mine is not None and theirs is not None and theirs < mine):
                found.append(f"{module} → {name}")
    return found


def project_sources() -> dict[str, str]:
    files = [ROOT / "cli.py", *(ROOT / "compress").rglob("*.py"), *(ROOT / "adb_bench").rglob("*.py")]
    return {".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): f.read_text() for f in files}


def test_every_module_of_the_project_has_a_rank():
    unranked = [m for m in project_sources() if m.startswith("compress") and rank(m) is None]
    assert unranked == []


def test_no_module_imports_upward():
    assert upward(project_sources()) == []


def test_a_planted_upward_import_is_found():
    sources = project_sources()
    prune = sources["compress.techniques.prune"]
    assert upward(sources | {"compress.techniques.prune": prune + "\nfrom compress.pipeline import base_model\n"}) == [
        "compress.techniques.prune → compress.pipeline", "compress.techniques.prune → compress.pipeline.base_model"]
    lazy = "def f():\n    from compress.variant import Plan\n"  # inside a function counts too
    assert upward({"compress.train": lazy}) == ["compress.train → compress.variant",
                                                "compress.train → compress.variant.Plan"]
    assert upward({"adb_bench.host": "import compress.latency\n"}) == ["adb_bench.host → compress.latency"]
