"""Keras backends (#16): choosing one, a slot's environment per backend, precision in the trial key, and the
jax backend end to end on a machine without TensorFlow (sweep, MLflow, report, best, export, predict)."""

from __future__ import annotations

import json
import os
import sys
import time

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from runner import backends
from runner.execution.scheduler import plan_slots
from runner.spec.trial_spec import TrialSpec
from runner.spec.sweep import load_sweep, merged_resources
from tests.conftest import ROOT, run_cli
from tests.runner.execution.test_run import FEATURES, write_sweep
from zoo.errors import UserError

pytestmark = pytest.mark.skipif(not backends.installed("jax"), reason="jax is not installed ([jax] extra)")


def test_a_slot_environment_per_backend():
    jax_shared = backends.slot_environment("jax", "1", trials_per_gpu=2, cpu_threads=4)
    assert jax_shared["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID" and jax_shared["CUDA_VISIBLE_DEVICES"] == "1"
    assert jax_shared["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert float(jax_shared["XLA_PYTHON_CLIENT_MEM_FRACTION"]) <= 0.5 and jax_shared["OMP_NUM_THREADS"] == "4"
    assert "XLA_PYTHON_CLIENT_PREALLOCATE" not in backends.slot_environment("jax", "0", trials_per_gpu=1)
    jax_cpu = backends.slot_environment("jax", None, cpu_threads=1)
    assert jax_cpu["JAX_PLATFORMS"] == "cpu" and jax_cpu["CUDA_VISIBLE_DEVICES"] == ""
    tf_gpu = backends.slot_environment("tensorflow", "0", trials_per_gpu=3, cpu_threads=2)
    assert tf_gpu["TF_FORCE_GPU_ALLOW_GROWTH"] == "true" and tf_gpu["TF_NUM_INTRAOP_THREADS"] == "2"
    torch_gpu = backends.slot_environment("torch", "2", trials_per_gpu=2)
    assert torch_gpu["KERAS_BACKEND"] == "torch" and not any(k.startswith(("XLA", "TF_")) for k in torch_gpu)


def test_gpu_slots_share_the_cores(monkeypatch):
    monkeypatch.setenv("VIDEOSWEEP_FAKE_GPUS", "2")
    slots = plan_slots("auto", 2, None)
    assert [s.gpu for s in slots] == ["0", "0", "1", "1"]
    assert all(s.cpu_threads == max(1, (os.cpu_count() or 1) // 4) for s in slots)
    with pytest.raises(UserError, match=r"GPU 5 which is not there \(GPUs found: 0, 1\)"):
        plan_slots("5", 1, None)


def test_the_backend_is_chosen_by_flag_then_sweep_then_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert backends.chosen() == "jax" and backends.chosen("tensorflow") == "tensorflow"
    monkeypatch.delenv("KERAS_BACKEND")
    assert backends.chosen() == ("tensorflow" if backends.installed("tensorflow") else "jax")
    sweep = load_sweep(write_sweep(tmp_path, [{"architecture": ["image_mlp_frozen"], **FEATURES}],
                                   resources={"backend": "JAX"}))
    assert sweep.resources.backend == "jax"
    assert merged_resources(sweep, {"backend": None}).backend == "jax"
    with pytest.raises(UserError, match=r"^--backend: unknown backend 'caffe'; choose one of tensorflow, jax, torch"):
        merged_resources(sweep, {"backend": "caffe"})


def test_precision_enters_the_trial_key_only_when_not_float32():
    import hashlib

    spec = TrialSpec.from_flat({"architecture": "image_mlp_frozen", "backbone": "mobilenet_v2"})
    before = {k: v for k, v in spec.flat().items() if k != "precision"}  # the parameters before #16
    old_key = hashlib.sha256(json.dumps({"params": before, "data": "fp"}, sort_keys=True).encode()).hexdigest()[:12]
    assert spec.key("fp") == old_key
    mixed = TrialSpec.from_flat({"architecture": "image_mlp_frozen", "backbone": "mobilenet_v2",
                                 "precision": "mixed_bfloat16"})
    assert mixed.key("fp") != old_key and mixed.flat()["precision"] == "mixed_bfloat16"
    with pytest.raises(UserError, match="precision"):
        TrialSpec.from_flat({"architecture": "image_mlp_frozen", "precision": "float8"})


# --------------------------------------------------------------------------- without TensorFlow, on jax

BLOCK = '''import sys


class _NoTensorFlow:
    """Imports of TensorFlow fail as on a machine without it (nothing is put in sys.modules)."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tensorflow_cpu", "tf_keras", "tensorboard"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None


sys.meta_path.insert(0, _NoTensorFlow())
'''


@pytest.fixture(scope="module")
def no_tensorflow(tmp_path_factory) -> dict[str, str]:
    """Environment for CLI subprocesses (and the workers they spawn) in which TensorFlow cannot be imported."""
    site = tmp_path_factory.mktemp("no-tensorflow")
    (site / "sitecustomize.py").write_text(BLOCK)
    path = os.pathsep.join(p for p in (str(site), str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "KERAS_BACKEND": "jax", "VIDEOSWEEP_CACHE": str(site / "cache")}


def test_the_block_really_hides_tensorflow(no_tensorflow):
    import subprocess

    code = "from runner import backends; import keras; print(backends.installed_backends(), keras.backend.backend())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, **no_tensorflow}, timeout=120)
    assert out.returncode == 0 and out.stdout.split("] ")[-1].strip() == "jax", out.stderr
    assert "'tensorflow'" not in out.stdout


@pytest.mark.slow
def test_jax_sweep_report_export_predict_without_tensorflow(no_tensorflow, tiny_seals, tmp_path):
    space = [{"architecture": ["image_mlp_frozen"], **FEATURES, "layer_1_size": [8]},
             {"architecture": ["video_lrcnn_frozen"], **FEATURES, "sequence_length": [3],
              "sequence_model": ["GRU"], "layer_1_size": [8]}]
    path = write_sweep(tmp_path, space, name="jx", training={"epochs": 2, "patience": 2, "learning_rates": [1e-3],
                                                             "batch_size": 32})
    body = yaml.safe_load(path.read_text())
    body["data"]["root"] = str(tiny_seals)
    path.write_text(yaml.safe_dump(body))
    workdir = tmp_path / "work"
    started = time.perf_counter()
    result = run_cli("run", str(path), "--workdir", str(workdir), "--workers", "1", "--backend", "jax",
                     env=no_tensorflow)
    sweep_seconds = time.perf_counter() - started
    assert result.returncode == 0, result.stderr[-3000:]

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("jx").experiment_id
    runs = client.search_runs([experiment], "tags.`videosweep.role` = 'trial'")
    assert len(runs) == 2
    for run in runs:
        assert run.data.tags["backend"] == "jax" and run.data.tags["backend_version"] == backends.version("jax")
        assert run.data.tags["device"].startswith("CPU ") and run.data.params["precision"] == "float32"
        assert "compile_seconds" in run.data.metrics
        model_dirs = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert "trial" in model_dirs
    results = [json.loads(p.read_text()) for p in (workdir / "trials").glob("*/results.json")]
    assert {r["backend"] for r in results} == {"jax"} and all(r["compile_seconds"] >= 0 for r in results)
    print(f"jax sweep of 2 trials without TensorFlow: {sweep_seconds:.1f} s")

    report = run_cli("report", str(path), "--workdir", str(workdir), "--out", str(tmp_path / "report"),
                     env=no_tensorflow)
    assert report.returncode == 0 and (tmp_path / "report" / "report.html").is_file(), report.stderr[-2000:]
    best = run_cli("best", str(path), "--workdir", str(workdir), "--json", env=no_tensorflow)
    assert best.returncode == 0, best.stderr[-2000:]

    refused = run_cli("export", str(path), "--workdir", str(workdir), "--out", str(tmp_path / "sm"),
                      "--format", "keras,savedmodel", env=no_tensorflow)
    assert refused.returncode == 2 and not (tmp_path / "sm").exists()
    assert [line for line in refused.stderr.splitlines() if line.strip()] == [
        "error: --format savedmodel needs TensorFlow, which is not installed here: pip install 'videosweep[cpu]' "
        "(or [gpu]), or export --format keras"]

    out = tmp_path / "export"
    exported = run_cli("export", str(path), "--workdir", str(workdir), "--out", str(out), "--format", "keras",
                       "--allow-baseline", env=no_tensorflow)  # at chance on the seals frames
    assert exported.returncode == 0, exported.stderr[-2000:]
    frames = tmp_path / "p.csv"
    predicted = run_cli("predict", str(out), "--data", str(tiny_seals), "--out", str(frames), env=no_tensorflow)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    registered = tmp_path / "r.csv"
    by_alias = run_cli("predict", "models:/jx@champion", "--sweep", str(path), "--workdir", str(workdir),
                       "--data", str(tiny_seals), "--out", str(registered), env=no_tensorflow)
    assert by_alias.returncode == 0, by_alias.stderr[-2000:]
    table = pd.read_csv(frames)
    assert len(table) == len(pd.read_csv(tiny_seals / "labels.csv")) and registered.read_text() == frames.read_text()


@pytest.mark.slow
def test_the_same_seed_gives_the_same_history_on_jax(no_tensorflow, tiny_seals, tmp_path):
    histories = []
    for name in ("a", "b"):
        result = run_cli("train", "--data", str(tiny_seals), "--out", str(tmp_path / name), "--backend", "jax",
                         "--set", "architecture=image_mlp_frozen", "--set", "backbone=mobilenet_v2",
                         "--set", "weights=none", "--set", "frame_size=32x32", "--set", "layer_1_size=8",
                         "--set", "dropout=0.5", "--set", "epochs=3", "--set", "patience=3",
                         "--set", "learning_rates=[0.001]", "--set", "seed=3", env=no_tensorflow)
        assert result.returncode == 0, result.stderr[-2000:]
        histories.append(pd.read_csv(tmp_path / name / "fit_history.csv"))
        assert json.loads((tmp_path / name / "results.json").read_text())["backend"] == "jax"
    assert len(histories[0]) == 3
    for column in ("loss", "val_accuracy", "val_loss"):
        assert histories[0][column].tolist() == histories[1][column].tolist()


def test_a_worker_imports_its_backend_without_what_it_never_uses():
    """scikit-learn, matplotlib and (under TensorFlow) JAX stay out of the backend and Keras imports of a worker's
    start, and import as usual afterwards (the trial's plots need matplotlib)."""
    import subprocess

    code = ("import sys; from runner.execution.worker import ProcessSetup, configure_process\n"
            "configure_process(ProcessSetup(backend='tensorflow', cpu_threads=1))\n"
            "print(sorted(m for m in ('sklearn', 'matplotlib', 'jax') if m in sys.modules))\n"
            "import keras, matplotlib.pyplot; print(keras.backend.backend(), 'matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**os.environ, "KERAS_BACKEND": "tensorflow"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[:2] == ["[]", "tensorflow True"], out.stdout
