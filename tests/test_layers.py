"""The house rules, read from the code: layers zoo <- runner <- reports <- videosweep, nothing imports upwards,
no import circle inside runner/ between search strategies, and Optuna's private API in one adapter only."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

LAYERS = ("zoo", "runner", "reports", "videosweep")


def imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
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


def test_search_strategies_do_not_import_each_other():
    assert not {name for name in imports(ROOT / "runner" / "tuner.py") if name.startswith("runner.search")}


def test_optuna_private_api_is_reached_only_through_the_adapter():
    private = ("._storage", "._trial_id", "._study_id", "optuna.storages._rdb", "._get_stale_trial_ids")
    offenders = [f"{path.relative_to(ROOT)}: {marker}" for package in LAYERS for path in package_files(package)
                 if path.name != "optuna_internals.py" for marker in private if marker in path.read_text()]
    assert offenders == []


def test_only_the_command_line_exits_the_process():
    offenders = [str(path.relative_to(ROOT)) for package in ("zoo", "runner", "reports")
                 for path in package_files(package) if "sys.exit(" in path.read_text()]
    assert offenders == []
