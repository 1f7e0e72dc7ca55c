"""Run options: the sweep's `resources` merged with command-line overrides and validated by one model, so a
bad override is refused exactly like the same value in the sweep file (exit 2, one line, nothing created)."""

from __future__ import annotations

import sys
import subprocess
from pathlib import Path

import pytest
import yaml

from runner.spec.sweep import load_sweep, merged_resources
from tests.conftest import ROOT, SEALS, run_cli
from tests.runner.execution.test_run import FEATURES
from zoo.errors import UserError

BAD_OVERRIDES = [
    ("--trial-timeout", "-1", "greater than 0"),
    ("--workers", "0", "greater than or equal to 1"),
    ("--trials-per-gpu", "0", "greater than or equal to 1"),
    ("--max-retries", "-2", "greater than or equal to 0"),
    ("--trials-per-process", "0", "greater than or equal to 1"),
    ("--memory-limit", "0", "greater than 0"),
    ("--gpus", "first", "should match pattern"),
]


def sweep_file(folder: Path, **resources: object) -> Path:
    path = folder / "sweep.yaml"
    body = {"name": "options", "data": {"root": str(SEALS)}, "training": {"epochs": 1, "learning_rates": [1e-3]},
            "space": [{"architecture": ["image_mlp_frozen"], **FEATURES, "layer_1_size": [0]}]}
    if resources:
        body["resources"] = resources
    path.write_text(yaml.safe_dump(body))
    return path


@pytest.mark.parametrize("command", ["run", "resume", "worker"])
@pytest.mark.parametrize(("flag", "value", "message"), BAD_OVERRIDES, ids=[flag for flag, _, _ in BAD_OVERRIDES])
def test_a_bad_override_is_refused_like_the_sweep_file_value(tmp_path, command, flag, value, message):
    workdir = tmp_path / "work"
    extra = ["--storage", f"sqlite:///{tmp_path / 'shared.db'}"] if command == "worker" else []
    result = run_cli(command, str(sweep_file(tmp_path)), "--workdir", str(workdir), *extra, f"{flag}={value}")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2, result.stderr[-800:]
    assert "Traceback" not in result.stderr
    assert len(errors) == 1 and errors[0].startswith(f"error: {flag}: ") and message in errors[0], result.stderr
    assert not workdir.exists() and not (tmp_path / "shared.db").exists()


def test_the_same_value_in_the_sweep_file_gives_the_same_reason(tmp_path):
    result = run_cli("run", str(sweep_file(tmp_path, workers=0)), "--workdir", str(tmp_path / "work"))
    assert result.returncode == 2
    assert "resources.workers: Input should be greater than or equal to 1" in result.stderr
    assert not (tmp_path / "work").exists()


def test_overrides_win_and_zero_is_a_value_not_unset(tmp_path):
    sweep = load_sweep(sweep_file(tmp_path, max_retries=3, trials_per_process=7, workers=2))
    merged = merged_resources(sweep, {"max_retries": 0, "workers": None, "trial_timeout": 30.0})
    assert (merged.max_retries, merged.workers, merged.trials_per_process, merged.trial_timeout) == (0, 2, 7, 30.0)
    with pytest.raises(UserError, match=r"^--workers: Input should be greater than or equal to 1$"):
        merged_resources(sweep, {"workers": 0})


def test_python_dash_m_videosweep_runs_the_cli():
    result = subprocess.run([sys.executable, "-m", "videosweep", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for command in ("plan", "run", "resume", "worker", "report", "export", "predict", "data"):
        assert command in result.stdout
