"""Work lost per preemption (issue #28's figures): a trial with long epochs is preempted at seeded random moments
and continued from its checkpoint each time, then compared with an uninterrupted run. Prints figures; exits 1 when
the histories differ.

    python benchmarks/preemption.py [--preemptions 10] [--seed 0] [--epochs 6]

The trial: video_lrcnn_trainable (MobileNetV2 trained end to end, no ImageNet weights) on the seals frames at
128x128, windows of 6 frames, batches of 16: an epoch of ~30 s or more on a 2-core machine. The harness trains it
in this process, as a worker does: a thread plays the SIGTERM handler (sets the preemption flag) at a seeded
moment of each attempt's training; training checkpoints at its next batch and raises `Preempted`; the next attempt
continues from the checkpoint. Every batch trained is counted (the `batches` fault), so batches trained twice show up.
Per preemption:
  stop      seconds from the signal to training stopped: the batch in progress, then the checkpoint write
  write     seconds the checkpoint write took (`Checkpointer.write`)
  lost      work done and not kept: batches trained again after it (times the batch time) plus the write
each as a fraction of an epoch (the uninterrupted run's median epoch time); median and worst.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from benchmarks.chaos import COMPARED, lines  # noqa: E402 - the same columns, the same count of a fault's file
TRIAL = {"architecture": "video_lrcnn_trainable", "backbone": "mobilenet_v2", "weights": "none",
         "frame_size": "128x128", "sequence_length": 6, "sequence_model": "GRU", "layer_1_size": 16, "dropout": 0.2,
         "patience": 100, "learning_rates": [1e-3], "batch_size": 16}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preemptions", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        figures, same = measure(args.preemptions, args.seed, args.epochs, Path(tmp))
    print(json.dumps(figures, indent=2))
    print("history: " + ("equal to the uninterrupted run's" if same else "DIFFERS from the uninterrupted run's"))
    sys.exit(0 if same else 1)


def preempt_later(counted: Path, delay: float, signalled: list[float], done: threading.Event) -> None:
    """Play the SIGTERM handler `delay` seconds after this attempt's second batch (its first ones trace the model:
    a signal then would time the compiler, not the preemption)."""
    from runner import preemption

    start = lines(counted)
    while not done.is_set() and lines(counted) < start + 2:
        time.sleep(0.05)
    if done.wait(delay):
        return
    signalled.append(time.perf_counter())
    preemption.requested.set()


def measure(preemptions: int, seed: int, epochs: int, folder: Path) -> tuple[dict[str, object], bool]:
    import pandas as pd

    from runner import preemption
    from runner.spec.trial_spec import TrialSpec
    from runner.trial import checkpoints
    from runner.trial.training import run_trial
    from zoo import load_dataset

    dataset = load_dataset(ROOT / "examples" / "seals")
    spec = TrialSpec.from_flat({**TRIAL, "epochs": epochs})
    cache = folder / "cache"
    counted = folder / "batches.jsonl"
    os.environ["VIDEOSWEEP_FAULT"] = f"batches:@{counted}"

    run_trial(spec, dataset, folder / "whole", cache_dir=cache)
    whole = pd.read_csv(folder / "whole" / "fit_history.csv")
    epoch_seconds = statistics.median(whole["seconds"][1:]) if len(whole) > 1 else whole["seconds"][0]
    batches_whole = lines(counted)
    batch_seconds = epoch_seconds / (batches_whole / len(whole))
    counted.unlink()

    writes: list[float] = []
    write = checkpoints.Checkpointer.write

    def timed_write(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003 - the method's own signature
        started = time.perf_counter()
        try:
            return write(self, *args, **kwargs)
        finally:
            writes.append(time.perf_counter() - started)

    checkpoints.Checkpointer.write = timed_write
    rng = random.Random(seed)
    stops: list[float] = []
    write_times: list[float] = []
    where: list[str] = []
    attempts = 0
    out = folder / "preempted"
    while True:
        attempts += 1
        signalled: list[float] = []
        done = threading.Event()
        if len(stops) < preemptions:  # the signal comes during training, once this attempt trains at full speed
            threading.Thread(target=preempt_later, daemon=True,
                             args=(counted, rng.uniform(0, 0.3) * epoch_seconds, signalled, done)).start()
        writes.clear()
        try:
            run_trial(spec, dataset, out, cache_dir=cache, checkpoints=True, checkpoint_seconds=0, overwrite=True)
            done.set()
            break
        except preemption.Preempted as stopped:
            done.set()
            stops.append(time.perf_counter() - signalled[0])
            where.append(f"{stopped} ({stops[-1]:.1f} s after the signal)")
            write_times.append(writes[-1])
            preemption.requested.clear()
    trained = [json.loads(line) for line in counted.read_text().splitlines()]
    positions = [(row["epoch"], row["batch"]) for row in trained]
    redone = len(positions) - len(set(positions))  # a batch position trained twice: work a preemption lost
    lost = [w + redone * batch_seconds / max(len(write_times), 1) for w in write_times]  # redone work, shared out
    same = pd.read_csv(out / "fit_history.csv")[COMPARED].equals(whole[COMPARED])

    def spread(values: list[float]) -> dict[str, float]:
        return {"median": round(statistics.median(values) / epoch_seconds, 4),
                "worst": round(max(values) / epoch_seconds, 4)} if values else {}

    figures = {"preemptions": len(stops), "attempts": attempts, "epoch_seconds": round(epoch_seconds, 1),
               "batches_per_epoch": batches_whole // len(whole), "batch_seconds": round(batch_seconds, 2),
               "batches_uninterrupted": batches_whole, "batches_trained": len(trained), "batches_redone": redone,
               "stop_fraction_of_epoch": spread(stops), "write_fraction_of_epoch": spread(write_times),
               "lost_fraction_of_epoch": spread(lost),
               "write_seconds_median": round(statistics.median(write_times), 3) if write_times else None,
               "stops": where}
    return figures, same


if __name__ == "__main__":
    main()
