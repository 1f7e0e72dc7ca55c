"""The house rules, read from the code: layers zoo <- runner <- reports <- videosweep, nothing imports upwards;
runner/'s rooms import one another only in the allowed direction; search strategies do not import each other;
Optuna's private API in one adapter only."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

LAYERS = ("zoo", "runner", "reports", "videosweep")
# runner/'s rooms and the rooms each may import (besides itself and runner/'s leaf helpers)
ROOMS = {
    "spec": set(),
    "study": {"spec"},
    "trial": {"spec"},
    "tracking": {"spec"},
    "search": {"study", "tracking", "spec"},
    "execution": {"search", "study", "trial", "tracking", "spec"},
}
LEAF_HELPERS = {"__init__", "backends", "fault_injection", "memory", "preemption", "retry", "sqlite", "workdir"}


def imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions."""
    return imported(path.read_text())


def imported(source: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def package_files(package: str) -> list[Path]:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no Python files found under {ROOT / package}"
    return files


def test_no_package_imports_a_layer_above_it():
    upward = []
    for level, package in enumerate(LAYERS):
        above = LAYERS[level + 1:]
        for path in package_files(package):
            upward += [f"{path.relative_to(ROOT)} imports {name}" for name in imports(path)
                       if name.split(".")[0] in above]
    assert upward == []


def room_of(module: str) -> str | None:
    """The runner room a dotted module name lies in: a subpackage, "leaf" for runner/'s helpers, None outside."""
    parts = module.split(".")
    if parts[0] != "runner" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in ROOMS else "leaf"


def wrong_way_imports(sources: dict[str, str]) -> list[str]:
    """Imports between runner's rooms against the allowed direction, given each module's name and source."""
    found = []
    for module, source in sources.items():
        room = room_of(module)
        for name in imported(source):
            target = room_of(name)
            if target is None or target == room or name == "runner":
                continue
            if (room == "leaf" and target != "leaf") or (room in ROOMS and target in ROOMS and target not in ROOMS[room]):
                found.append(f"{module} ({room}) imports {name} ({target})")
    return found


def runner_sources() -> dict[str, str]:
    return {".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): path.read_text()
            for path in package_files("runner")}


def test_runner_rooms_import_only_in_the_allowed_direction():
    assert wrong_way_imports(runner_sources()) == []


def test_a_planted_wrong_way_import_is_caught():
    sources = runner_sources()
    planted = {"runner.trial.training": "from runner.study import claims\n",  # trial must not read the study
               "runner.spec.sweep": "def f():\n    from runner.execution.run import run_sweep\n",  # nor spec run
               "runner.workdir": "import runner.trial.checkpoints\n"}  # a leaf helper imports no room
    for module, line in planted.items():
        found = wrong_way_imports({**sources, module: sources[module] + line})
        assert found and all(line.startswith(module) for line in found), found


def test_runner_holds_only_its_rooms_and_leaf_helpers_each_room_says_its_job():
    top = {path.stem for path in (ROOT / "runner").glob("*.py")}
    assert top == LEAF_HELPERS
    rooms = {path.name for path in (ROOT / "runner").iterdir() if path.is_dir() and path.name != "__pycache__"}
    assert rooms == set(ROOMS)
    for room in ROOMS:
        tree = ast.parse((ROOT / "runner" / room / "__init__.py").read_text())
        docstring = ast.get_docstring(tree)
        assert docstring and "\n" not in docstring and len(tree.body) == 1, room  # one line, nothing else


def test_reports_never_import_how_sweeps_run():
    offenders = [f"{path.relative_to(ROOT)} imports {name}" for path in package_files("reports")
                 for name in imports(path) if name.startswith("runner.execution")]
    assert offenders == []


def test_search_strategies_do_not_import_each_other():
    strategies = {"grid", "optuna_search", "keras_tuner"}
    for strategy in strategies:
        names = imports(ROOT / "runner" / "search" / f"{strategy}.py")
        assert not {name for name in names for other in strategies | {"base"}
                    if name.startswith(f"runner.search.{other}")}, strategy


def test_optuna_private_api_is_reached_only_through_the_adapter():
    private = ("._storage", "._trial_id", "._study_id", "optuna.storages._rdb", "._get_stale_trial_ids")
    offenders = [f"{path.relative_to(ROOT)}: {marker}" for package in LAYERS for path in package_files(package)
                 if path.name != "optuna_internals.py" for marker in private if marker in path.read_text()]
    assert offenders == []


def test_only_the_command_line_exits_the_process():
    offenders = [str(path.relative_to(ROOT)) for package in ("zoo", "runner", "reports")
                 for path in package_files(package) if "sys.exit(" in path.read_text()]
    assert offenders == []
