"""The code's shape: dependencies point one way, no module imports one that imports it back, and the layout
table (docs/layout.md) names the folders that exist."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

from helpers import ROOT

PACKAGES = ("actors", "models", "rewards", "rollouts", "qadata", "evaluation", "launch")
# Lower layers never import a higher one: the roles and what they use know nothing of the controller.
BELOW_THE_CONTROLLER = ("actors", "models", "rewards", "rollouts", "qadata")
ROLES = ("actors.learner", "actors.rollout", "actors.reward")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports() -> dict[str, set[str]]:
    """module -> the project modules it imports, anywhere in the file (a function's import counts too)."""
    files = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]
    modules = {module_name(p): p for p in files}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found |= {f"{node.module}.{a.name}" for a in node.names}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_module_imports_one_that_imports_it_back():
    assert cycles(project_imports()) == []


def test_a_planted_cycle_is_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_dependencies_point_one_way():
    graph = project_imports()
    upward = sorted(f"{m} -> {d}" for m, deps in graph.items() if m.startswith(BELOW_THE_CONTROLLER)
                    for d in deps if d.startswith(("launch", "evaluation")))
    assert upward == [], "a role or a library module imports the controller's code"
    between_roles = sorted(f"{m} -> {d}" for m in ROLES for d in graph[m] if d in ROLES)
    assert between_roles == [], "a role imports another role"


def test_the_layout_table_names_the_folders_that_exist():
    table = (ROOT / "docs" / "layout.md").read_text()
    rows = re.findall(r"^\| `([\w.-]+)/` \| (.*) \|$", table, flags=re.M)
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    folders = {line.split("/")[0] for line in tracked.splitlines() if "/" in line and not line.startswith(".")}
    assert {name for name, _ in rows} == folders
    for folder, description in rows:
        for file in re.findall(r"`([\w/-]+\.(?:py|yaml))`", description):
            assert list((ROOT / folder).rglob(file)) or (ROOT / file).is_file(), f"{folder}/ names {file}"
