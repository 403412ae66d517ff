"""The code's layers point one way: no two units import each other, and the official label rules
and metric at the bottom import nothing of mvfoul's above them. Read from the source (imports
inside functions included), so a new cycle fails here before it confuses a reader."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "mvfoul"
PACKAGES = ("data", "models", "training", "evaluation", "legacy")
BOTTOM = {"labels": {"errors"}}


def unit(module: str) -> str:
    """``mvfoul.data.video`` -> ``data``; ``mvfoul.validate`` -> ``validate``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in SRC.rglob("*.py"):
        here = unit("mvfoul." + ".".join(path.relative_to(SRC).with_suffix("").parts))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module == "mvfoul":
                names = [f"mvfoul.{a.name}" for a in node.names]  # from mvfoul import config
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if name.startswith("mvfoul.") and unit(name) != here:
                    graph[here].add(unit(name))
    return graph


def test_no_two_units_import_each_other():
    graph = imports()
    both_ways = sorted(
        {tuple(sorted((a, b))) for a in graph for b in graph[a] if a in graph.get(b, ())}
    )
    assert not both_ways, f"units importing each other: {both_ways}"


def test_the_official_rules_and_metric_sit_at_the_bottom():
    graph = imports()
    for bottom, allowed in BOTTOM.items():
        assert graph.get(bottom, set()) <= allowed, f"{bottom} imports {graph[bottom] - allowed}"
    assert (
        "evaluation" not in graph["training"] and "sampling" not in graph
    )  # the sampler is data's


def test_validate_imports_nothing_above_the_schema():
    """Cross-key rules register themselves from the modules they protect (mvfoul.rules)."""
    assert imports()["validate"] <= {"config", "errors"}


def test_every_cross_key_rule_is_registered_by_mvfoul_rules():
    defined = set()
    for path in SRC.rglob("*.py"):
        module = "mvfoul." + ".".join(path.relative_to(SRC).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and any(
                isinstance(d, ast.Call) and getattr(d.func, "id", "") == "cross_key_rule"
                for d in node.decorator_list
            ):
                defined.add(f"{module}.{node.name}")
    import mvfoul.rules  # noqa: F401
    from mvfoul.validate import registered_rules

    assert len(defined) >= 10
    assert set(registered_rules()) == defined


def test_the_complete_check_has_one_name_and_it_is_in_mvfoul_rules():
    """mvfoul.validate runs only the rules registered so far (a caller that imported part of the
    package would skip the rest, silently): validate_config exists in mvfoul.rules alone."""
    import mvfoul.rules
    import mvfoul.validate

    assert hasattr(mvfoul.rules, "validate_config")
    assert not hasattr(mvfoul.validate, "validate_config")
