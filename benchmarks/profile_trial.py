"""Where one demo trial's time goes (issue: the product). Prints a table of phases; asserts nothing.

    python benchmarks/profile_trial.py [--architecture video_lrcnn_frozen]

Runs one trial of sweeps/seals-demo.yaml under cProfile twice (cold: features extracted; warm: from the
cache, as most trials of a sweep run) and reports the cumulative time of each phase of runner.trial.training.run_trial.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PHASES = {  # (file suffix, function) -> phase name
    ("runner/trial/training.py", "prepare_source"): "frames/features (cache or extraction)",
    ("zoo/__init__.py", "create_model"): "build the model",
    ("runner/trial/training.py", "run"): "training rounds (fit)",
    ("runner/trial/training.py", "_predict"): "test predictions",
    ("runner/trial/latency.py", "measure"): "latency/throughput of the end-to-end model (#20)",
    ("runner/trial/plots.py", "write_confusion_matrices"): "confusion matrix plots",
    ("runner/trial/training.py", "_model_summary"): "model summary",
    ("keras/src/saving/saving_api.py", "save_model"): "save model_best.keras",
    ("runner/trial/training.py", "run_trial"): "whole trial",
}


def profile_once(spec, dataset, cache: Path) -> dict[str, float]:
    from runner.trial.training import run_trial

    with tempfile.TemporaryDirectory() as out:
        profiler = cProfile.Profile()
        profiler.enable()
        run_trial(spec, dataset, Path(out) / "trial", cache_dir=cache)
        profiler.disable()
    stats = pstats.Stats(profiler).stats
    seconds = {}
    for (filename, _, function), (_, _, _, cumulative, _) in stats.items():
        for (suffix, name), phase in PHASES.items():
            if function == name and filename.endswith(suffix):
                seconds[phase] = seconds.get(phase, 0.0) + cumulative
    return seconds


def main() -> None:
    import yaml

    from runner.spec.trial_spec import TrialSpec
    from zoo import load_dataset

    parser = argparse.ArgumentParser()
    parser.add_argument("--architecture", default="video_lrcnn_frozen")
    args = parser.parse_args()
    sweep = yaml.safe_load((ROOT / "sweeps" / "seals-demo.yaml").read_text())
    space = next(s for s in sweep["space"] if args.architecture in s["architecture"])
    params = {k: v[0] for k, v in space.items()} | {"architecture": args.architecture} | sweep["training"]
    spec = TrialSpec.from_flat(params)
    dataset = load_dataset(ROOT / "examples" / "seals")
    with tempfile.TemporaryDirectory() as cache:
        cold = profile_once(spec, dataset, Path(cache))
        warm = profile_once(spec, dataset, Path(cache))
    print(f"one seals-demo trial ({args.architecture}), seconds: cold cache | warm cache")
    for phase in PHASES.values():
        print(f"  {phase:<40} {cold.get(phase, 0.0):7.2f} | {warm.get(phase, 0.0):7.2f}")


if __name__ == "__main__":
    main()
