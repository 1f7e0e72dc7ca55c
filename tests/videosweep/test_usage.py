"""Command-line conventions of click tools: usage mistakes exit 2 with click's usage line, -h everywhere,
--version, click's metavars, "did you mean", paths as resolved, YAML mistakes in words."""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import SEALS, run_cli
from runner.spec.trial_spec import read_yaml_mapping
from runner.spec.sweep import sweep_from_mapping
from zoo.errors import UserError


@pytest.mark.parametrize("args, usage, error", [
    (["frobnicate"], "Usage: videosweep [OPTIONS] COMMAND [ARGS]...", "No such command 'frobnicate'"),
    (["stauts", "x.yaml"], "Usage: videosweep [OPTIONS] COMMAND [ARGS]...", "Did you mean 'status'?"),
    (["run"], "Usage: videosweep run [OPTIONS] SWEEP_FILE", "Missing argument 'SWEEP_FILE'"),
    (["run", "x.yaml", "--wrkers", "2"], "Usage: videosweep run [OPTIONS] SWEEP_FILE", "--workers"),
    (["weights", "lst"], "Usage: videosweep weights [OPTIONS] COMMAND [ARGS]...", "Did you mean 'list'?"),
    (["data", "demo"], "Usage: videosweep data demo [OPTIONS]", "Missing option '--out'"),
])
def test_a_usage_mistake_prints_click_usage_and_exits_2(args, usage, error):
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(usage) and error in result.stderr
    command = " ".join(a for a in args[:2] if a in ("run", "weights", "data", "demo"))
    assert f"Try 'videosweep{' ' + command if command else ''} --help' for help." in result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr


def test_dash_h_works_everywhere_and_help_uses_click_metavars():
    for args in (["-h"], ["run", "-h"], ["weights", "fetch", "-h"], ["data", "demo", "-h"]):
        helped = run_cli(*args, env={"COLUMNS": "160"})
        assert helped.returncode == 0 and "Usage: videosweep" in helped.stdout, args
    run_help = run_cli("run", "--help", env={"COLUMNS": "160"}).stdout
    assert "SWEEP_FILE" in run_help and "INTEGER" in run_help and "PATH" in run_help
    assert "<bool>" not in run_help and "<int>" not in run_help and "{sweep_file}" not in run_help


def test_version_names_keras_the_backend_optuna_and_mlflow():
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith("videosweep ") and len(line.splitlines()) == 1
    for name in ("keras ", "backend ", "optuna ", "mlflow "):
        assert name in line


def base(**extra) -> dict:
    return {"name": "s", "data": {"root": str(SEALS)}, "space": [{"architecture": ["c3dsmall"]}], **extra}


@pytest.mark.parametrize("mapping, expected", [
    (base(search={"strategy": "optuna", "sampler": "tpee"}), "search.sampler: .*; did you mean tpe\\?"),
    (base(trainig={}), "trainig: unknown key; did you mean training\\?"),
    (base(search={"strategi": "grid"}), "search.strategi: unknown key; did you mean strategy\\?"),
    (base(space=[{"architecture": ["c3dsmall"], "layer1_size": [2]}]), "'layer1_size'; valid: .*; did you mean layer_1_size\\?"),
])
def test_unknown_names_in_a_sweep_file_suggest_the_closest(mapping, expected):
    with pytest.raises(UserError, match=expected):
        sweep_from_mapping(mapping, "s.yaml")


def test_unknown_architecture_and_backbone_suggest_the_closest(tmp_path):
    from runner.spec.trial_spec import TrialSpec
    from zoo.weights import weights_file

    with pytest.raises(UserError, match="unknown architecture 'c3dsmal'; choose one of: .*; did you mean c3dsmall\\?"):
        TrialSpec.from_flat({"architecture": "c3dsmal"})
    with pytest.raises(UserError, match="unknown backbone 'mobilnet_v2'; choose one of: .*; did you mean mobilenet_v2\\?"):
        weights_file("mobilnet_v2")


def test_a_missing_data_folder_is_named_where_it_was_looked_for_with_the_demo_hint(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**base(), "data": {"root": "no-such-data"}}))
    result = run_cli("plan", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert f"data folder {tmp_path / 'no-such-data'} does not exist" in result.stderr
    assert "videosweep data demo" in result.stderr


@pytest.mark.parametrize("text, hint", [
    ("name: a\nspace:\n  - architecture: [c3d]\n   backbone: [x]\n", "indentation"),
    ("name: a\nspace:\n\t- architecture: [c3d]\n", "a tab"),
    ('name: "a\nspace: []\n', "unclosed quote"),
])
def test_a_yaml_mistake_keeps_its_place_and_says_what_is_likely_wrong(tmp_path, text, hint):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=rf"s.yaml: malformed YAML at line \d+, column \d+: .*likely.*{hint}"):
        read_yaml_mapping(path, "sweep file")


def test_the_command_line_starts_without_the_heavy_libraries():
    """`--help`, `zoo` and `schema` answer at once: importing the CLI loads no data, tracking or training library
    (they are imported by the commands that use them)."""
    import subprocess
    import sys

    heavy = ("pandas", "pydantic", "mlflow", "optuna", "keras", "tensorflow", "jax", "matplotlib")
    probe = f"import sys, videosweep.cli; print([m for m in {heavy!r} if m in sys.modules])"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
