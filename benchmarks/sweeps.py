"""Per-trial orchestration overhead and slot scaling (issues: sweeps, scheduling). Prints figures only.

    python benchmarks/sweeps.py [--trials 16]

overhead: a grid of N identical tiny trials through `videosweep run` (one slot: process start, study
bookkeeping, artefacts, the rounds logic) against the same trials trained by a bare Keras loop in one warm
process; (sweep wall time - bare time) / N.
scaling: a sweep of 2N tiny trials (80) with 1 slot, then with 2 slots (each slot limited to its share of the
cores): the whole sweep's wall time, and the steady state between the first trial's start and the last one's end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.conftest import CLI  # noqa: E402  the one spelling of the `videosweep` command
SEALS = ROOT / "examples" / "seals"
TRAINING = {"epochs": 2, "patience": 2, "learning_rates": [1e-3], "batch_size": 64, "seed": 0}
POINT = {"architecture": "image_mlp_frozen", "backbone": "mobilenet_v2", "weights": "none", "frame_size": "32x32"}


def sweep_file(folder: Path, name: str, trials: int) -> Path:
    # Distinct seeds make distinct trials of identical cost.
    space = [{**{k: [v] for k, v in POINT.items()}, "layer_1_size": [16], "seed": list(range(trials))}]
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "data": {"root": str(SEALS)}, "training": TRAINING,
                                    "space": space}))
    return path


def run_sweep(path: Path, workdir: Path, *extra: str) -> float:
    started = time.perf_counter()
    subprocess.run([*CLI, "run", str(path), "--workdir",
                    str(workdir), *extra], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def bare_loop_seconds(trials: int, cache: Path) -> float:
    """The same trials, trained by hand in this (warm) process: build, fit, evaluate; nothing else."""
    import keras
    import numpy as np

    from runner.spec.trial_spec import TrialSpec
    from zoo import create_model, load_dataset
    from zoo.cache import load_features
    from zoo.windows import window_ends

    dataset = load_dataset(SEALS)
    spec = TrialSpec.from_flat({**POINT, **TRAINING, "layer_1_size": 16})
    features, _ = load_features(dataset, spec.model, cache)
    data = {s: window_ends(dataset, s, 1) for s in ("train", "valid", "test")}
    x = {s: np.asarray(features[e]) for s, e in data.items()}
    y = {s: keras.utils.to_categorical(dataset.label_indices[e], 2) for s, e in data.items()}
    started = time.perf_counter()
    for seed in range(trials):
        keras.utils.set_random_seed(seed)
        model = create_model(spec.model, 2)
        model.compile(keras.optimizers.Adam(1e-3), "categorical_crossentropy", metrics=["accuracy"])
        model.fit(x["train"], y["train"], validation_data=(x["valid"], y["valid"]), epochs=TRAINING["epochs"],
                  batch_size=64, verbose=0)
        model.evaluate(x["test"], y["test"], verbose=0)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=40, help="trials of the overhead sweeps")
    parser.add_argument("--scaling-trials", type=int, default=80, help="trials of the 1-slot and 2-slot sweeps")
    parser.add_argument("--part", choices=("overhead", "scaling", "all"), default="all")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="videosweep-bench-"))
    cache = folder / "cache"
    os.environ["VIDEOSWEEP_CACHE"] = str(cache)
    try:
        n = args.trials
        warm = sweep_file(folder, "warm", 1)
        run_sweep(warm, folder / "warm")  # computes the feature cache once, outside the timings
        if args.part in ("overhead", "all"):
            overhead(folder, cache, n)
        if args.part in ("scaling", "all"):
            scaling(folder, args.scaling_trials)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def overhead(folder: Path, cache: Path, n: int) -> None:
    small, large = n // 4, n
    bare = {k: bare_loop_seconds(k, cache) for k in (small, large)}
    swept = {k: run_sweep(sweep_file(folder, f"overhead{k}", k), folder / f"o{k}", "--workers", "1")
             for k in (small, large)}
    marginal = ((swept[large] - swept[small]) - (bare[large] - bare[small])) / (large - small)
    fixed = swept[small] - bare[small] - small * marginal
    print(f"per-trial overhead: {marginal:.2f} s per trial beyond a bare Keras loop (slope between sweeps of "
          f"{small} and {large} tiny trials: {swept[small]:.1f} s / {swept[large]:.1f} s against bare "
          f"{bare[small]:.1f} s / {bare[large]:.1f} s); plus {fixed:.1f} s once per sweep (CLI, study, MLflow, "
          f"worker start with its TensorFlow import) = {marginal + fixed / large:.2f} s per trial amortised "
          f"over {large}")


def trial_span(workdir: Path, name: str) -> float:
    """Seconds from the first trial's start to the last trial's end, from the study's own timestamps."""
    import optuna

    trials = optuna.load_study(study_name=name, storage=f"sqlite:///{workdir / 'optuna.db'}").trials
    return (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()


def scaling(folder: Path, n: int) -> None:
    one = run_sweep(sweep_file(folder, "one-slot", n), folder / "one", "--workers", "1")
    two = run_sweep(sweep_file(folder, "two-slots", n), folder / "two", "--workers", "2")
    span_one, span_two = trial_span(folder / "one", "one-slot"), trial_span(folder / "two", "two-slots")
    print(f"slot scaling, {n} tiny trials on {os.cpu_count()} cores: 1 slot {one:.1f} s, 2 slots {two:.1f} s "
          f"-> {two / one:.2f}x; first trial start to last trial end: {span_one:.1f} s vs {span_two:.1f} s -> "
          f"steady state {span_two / span_one:.2f}x (the rest, {one - span_one:.1f} s / {two - span_two:.1f} s, is "
          "start-up and finish: CLI, study, MLflow store, each worker's TensorFlow import)")


if __name__ == "__main__":
    main()
