"""The GPU path, checked on a real one-GPU machine with no network (issue #16). Writes benchmarks/GPU-RESULTS.md.

    python benchmarks/gpu_check.py [--backend tensorflow|jax|torch] [--trials-per-gpu 2] [--epochs 2]

What it does, all on the bundled seals frames with `weights: none` (nothing is downloaded):
1. a 12-trial sweep (4 frozen LRCNN, 4 image_mlp_trainable, 4 C3Dsmall) with `--gpus auto --trials-per-gpu N`
   on the chosen backend, sampling `nvidia-smi` twice a second for each worker's GPU memory;
2. checks every trial ran on the GPU (results.json's `device`, recorded by the trial itself);
3. the same sweep with `--trials-per-gpu 1` (fresh workdir and cache, so both pay extraction and compilation);
4. feature extraction throughput (JPEG files -> features) against its two limits measured in the same run:
   decoding alone and batched inference on in-memory batches;
and writes the figures, the machine and the versions to benchmarks/GPU-RESULTS.md.

On a machine without a GPU it refuses with one line and exit 2. It needs nothing beyond the installed
videosweep with the chosen backend's GPU extra ([gpu] or [jax-cuda]).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SEALS = ROOT / "examples" / "seals"
RESULTS = Path(__file__).resolve().parent / "GPU-RESULTS.md"
FRAME = "112x112"


def sweep_file(folder: Path, name: str, epochs: int) -> Path:
    import yaml

    common = {"weights": ["none"], "frame_size": [FRAME]}
    space = [
        {"architecture": ["video_lrcnn_frozen"], "backbone": ["mobilenet_v2"], **common, "sequence_length": [5],
         "sequence_model": ["LSTM", "GRU"], "layer_1_size": [32, 64]},
        {"architecture": ["image_mlp_trainable"], "backbone": ["mobilenet_v2"], **common,
         "layer_1_size": [0, 32], "dropout": [0.0, 0.2]},
        {"architecture": ["c3dsmall"], "frame_size": [FRAME], "sequence_length": [4, 6, 8, 10]},
    ]
    body = {"name": name, "data": {"root": str(SEALS)}, "space": space,
            "training": {"epochs": epochs, "patience": epochs, "learning_rates": [1e-3], "batch_size": 16}}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


class MemorySampler:
    """Peak GPU memory (MiB) per process from nvidia-smi, sampled in a thread."""

    def __init__(self, period: float = 0.5) -> None:
        self.period, self.peaks, self._stop = period, {}, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                                      "--format=csv,noheader,nounits"], capture_output=True, text=True,
                                     timeout=10).stdout
            except (OSError, subprocess.SubprocessError):
                out = ""
            for line in out.splitlines():
                parts = [p.strip() for p in line.split(",")]
                if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
                    self.peaks[int(parts[0])] = max(self.peaks.get(int(parts[0]), 0), int(parts[1]))
            self._stop.wait(self.period)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def run_sweep(path: Path, workdir: Path, cache: Path, backend: str, per_gpu: int) -> dict:
    command = [sys.executable, "-m", "videosweep", "run", str(path), "--workdir", str(workdir), "--gpus", "auto",
               "--trials-per-gpu", str(per_gpu), "--backend", backend, "--max-retries", "0"]
    env = {**os.environ, "VIDEOSWEEP_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    with MemorySampler() as memory:
        result = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    trials = [json.loads(p.read_text()) for p in sorted((workdir / "trials").glob("*/results.json"))]
    return {"seconds": seconds, "returncode": result.returncode, "trials": trials, "peaks": memory.peaks,
            "tail": (result.stdout + result.stderr)[-2000:]}


def extraction_figures(backend: str, frames: int = 512) -> dict:
    """In a child process on GPU 0: decode-only, inference-only and end-to-end extraction rates (frames/s)."""
    code = f"""
import json, time, numpy as np
from pathlib import Path
from zoo import canonical_spec, load_dataset
from zoo.backbones import build_backbone
from zoo.features import EXTRACTION_BATCH, compiled_inference, extract_features
from zoo.frames import iter_frame_batches
from zoo.registry import get_backbone
from zoo.spec import ModelSpec
from runner import backends
backends.configure({backend!r})
paths = list(load_dataset(Path({str(SEALS)!r})).frame_paths)[:{frames}]
spec = canonical_spec(ModelSpec(architecture="image_mlp_frozen", backbone="mobilenet_v2", weights="none",
                                frame_size=(112, 112)))
t = time.perf_counter(); batches = list(iter_frame_batches(paths, (112, 112), EXTRACTION_BATCH))
decode = len(paths) / (time.perf_counter() - t)
infer = compiled_inference(build_backbone(spec), EXTRACTION_BATCH,
                           freeze=get_backbone("mobilenet_v2").freeze_for_extraction)
infer(batches[0])
t = time.perf_counter()
for b in batches: infer(b)
inference = len(paths) / (time.perf_counter() - t)
extract_features(paths[:EXTRACTION_BATCH], spec)  # build and compile outside the timing
t = time.perf_counter(); extract_features(paths, spec); ours = len(paths) / (time.perf_counter() - t)
print(json.dumps({{"decode": decode, "inference": inference, "extraction": ours, "frames": len(paths),
                  "device": backends.device({backend!r})}}))
"""
    env = {**os.environ, **_slot_env(backend), "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        return {"error": result.stderr[-1500:]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def _slot_env(backend: str) -> dict[str, str]:
    from runner import backends

    return backends.slot_environment(backend, "0", 1, None)


def versions(backend: str) -> dict:
    from runner import backends

    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip()
    return {"gpu": smi, "backend": backend, "backend_version": backends.version(backend),
            "keras": backends.version("keras"), "python": platform.python_version(), "host": platform.node(),
            "cpu_count": os.cpu_count()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "tensorflow"))
    parser.add_argument("--trials-per-gpu", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    from runner import backends
    from runner.execution.scheduler import detect_gpus

    reason = backends.problem(args.backend)
    if reason is not None:
        print(f"gpu_check: --backend: {reason}", file=sys.stderr)
        return 2
    gpus = detect_gpus()
    if not gpus:
        print("gpu_check: no GPU found (nvidia-smi lists none); run it on a machine with an NVIDIA GPU",
              file=sys.stderr)
        return 2

    scratch = Path(tempfile.mkdtemp(prefix="videosweep-gpu-check-"))
    try:
        machine = versions(args.backend)
        shared = run_sweep(sweep_file(scratch, "gpu-check", args.epochs), scratch / "shared", scratch / "cache-a",
                           args.backend, args.trials_per_gpu)
        single = run_sweep(sweep_file(scratch, "gpu-check-1", args.epochs), scratch / "single",
                           scratch / "cache-b", args.backend, 1)
        extraction = extraction_figures(args.backend)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    trials = shared["trials"]
    on_gpu = [t for t in trials if str(t.get("device", "")).startswith("GPU ")]
    lines = [
        "# GPU check (issue #16)", "",
        f"Generated {dt.datetime.now():%Y-%m-%d %H:%M} by `python benchmarks/gpu_check.py --backend {args.backend} "
        f"--trials-per-gpu {args.trials_per_gpu}`.", "",
        f"Machine: {machine['gpu']}; {machine['cpu_count']} CPU cores; {args.backend} {machine['backend_version']}, "
        f"Keras {machine['keras']}, Python {machine['python']}.", "",
        "| check | result |", "|---|---|",
        f"| sweep exit code (--trials-per-gpu {args.trials_per_gpu}) | {shared['returncode']} |",
        f"| trials that ran on the GPU | {len(on_gpu)} of {len(trials)} "
        f"({', '.join(sorted({str(t.get('device')) for t in trials})) or 'none'}) |",
        f"| peak GPU memory per worker (MiB, nvidia-smi) | "
        f"{', '.join(str(v) for v in sorted(shared['peaks'].values())) or 'not seen'} |",
        f"| sweep wall time, --trials-per-gpu {args.trials_per_gpu} | {shared['seconds']:.1f} s |",
        f"| sweep wall time, --trials-per-gpu 1 | {single['seconds']:.1f} s "
        f"({single['seconds'] / max(shared['seconds'], 1e-9):.2f}x the shared run) |",
        f"| median compile_seconds per trial | {_median([t.get('compile_seconds') for t in trials])} |",
    ]
    if "error" in extraction:
        lines.append(f"| extraction | failed: {extraction['error'].splitlines()[-1] if extraction['error'] else ''} |")
    else:
        lines += [
            f"| decode limit (JPEG -> batches, {extraction['frames']} frames 112x112) | {extraction['decode']:.0f} "
            "frames/s |",
            f"| batched inference limit (in-memory, mobilenet_v2, {extraction['device']}) | "
            f"{extraction['inference']:.0f} frames/s |",
            f"| extraction, JPEG files -> features | {extraction['extraction']:.0f} frames/s "
            f"({extraction['extraction'] / min(extraction['decode'], extraction['inference']):.2f}x the lower "
            "limit) |",
        ]
    ok = shared["returncode"] == 0 and len(on_gpu) == len(trials) == 12
    lines += ["", f"Verdict: {'PASS' if ok else 'FAIL'} (every one of 12 trials finished on the GPU).", ""]
    if shared["returncode"] != 0:
        lines += ["Last output of the sweep:", "", "```", shared["tail"], "```", ""]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0 if ok else 1


def _median(values: list) -> str:
    numbers = sorted(v for v in values if isinstance(v, (int, float)))
    return f"{numbers[len(numbers) // 2]:.1f} s" if numbers else "not measured (single-epoch rounds)"


if __name__ == "__main__":
    sys.exit(main())
