"""On a machine with an NVIDIA GPU and JAX (no TensorFlow): what a slot's worker relies on, measured for real.

1. `runner.backends.device("jax")` names the GPU (the name trials record as their device);
2. a zoo model (C3D-small, 11 frames of 64x64) trains on the GPU: seconds per step at batch 32 (median of 20
   after warm-up), beside the same steps on the CPU for a ratio;
3. two trials sharing the GPU (`trials_per_gpu: 2`): a process given `slot_environment(..., 2)` that asks for
   more than its half fails with JAX's RESOURCE_EXHAUSTED, and `runner.memory.is_out_of_memory` calls it an
   out-of-memory failure (a trial recorded as `oom`, retried with half the batch under
   `resources.on_oom: retry_smaller_batch`), not an ordinary crash.

Run: `KERAS_BACKEND=jax python benchmarks/gpu_jax.py` (prints figures; exits 1 if a check fails). Narrower than
gpu_check.py (a whole sweep, so MLflow and Optuna installed): it needs only JAX, keras, pydantic and pandas, so it
runs where those are all that can be carried, and it checks what gpu_check does not: a GPU out-of-memory error.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# A child asking for 60% of the GPU under a slot's environment of two trials per GPU (each gets 47.5%).
_OVER_HALF = """
import json, sys
sys.path.insert(0, {root!r})
import jax, jax.numpy as jnp
from runner import memory
total = jax.devices()[0].memory_stats()["bytes_limit"]
try:
    x = jnp.ones((int(0.60 * total / {fraction}) // 4,), dtype=jnp.float32)
    x.block_until_ready()
    print(json.dumps({{"oom": False, "limit_gib": total / 2**30}}))
except Exception as err:
    print(json.dumps({{"oom": memory.is_out_of_memory(err), "type": type(err).__name__,
                      "message": str(err).splitlines()[0][:160], "limit_gib": total / 2**30}}))
"""


def step_seconds(model, batch, labels, steps: int = 20) -> float:
    model.train_on_batch(batch, labels)  # compile
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(batch, labels)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def training_figures() -> dict[str, float]:
    import jax
    import keras
    import numpy as np

    import zoo

    spec = {"architecture": "c3dsmall", "frame_size": "64x64", "sequence_length": 11}
    rng = np.random.default_rng(0)
    batch = rng.random((32, 11, 64, 64, 3), dtype=np.float32)
    labels = rng.integers(0, 2, 32)
    figures = {}
    for platform in ("gpu", "cpu"):
        with jax.default_device(jax.devices(platform)[0]):
            keras.utils.set_random_seed(0)
            model = zoo.create_model(spec, num_classes=2)
            model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
            figures[f"{platform}_seconds_per_step"] = step_seconds(model, batch, labels, 20 if platform == "gpu" else 3)
            figures["parameters"] = model.count_params()
    figures["cpu_over_gpu"] = figures["cpu_seconds_per_step"] / figures["gpu_seconds_per_step"]
    return figures


def shared_gpu_oom() -> dict[str, object]:
    from runner.backends import slot_environment

    env = {**os.environ, **slot_environment("jax", "0", trials_per_gpu=2)}
    fraction = float(env["XLA_PYTHON_CLIENT_MEM_FRACTION"])
    out = subprocess.run([sys.executable, "-c", _OVER_HALF.format(root=str(ROOT), fraction=fraction)], env=env,
                         capture_output=True, text=True, timeout=300)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1]) if lines else {"oom": False, "error": out.stderr[-400:]}
    return {"mem_fraction": fraction, **result}


def main() -> int:
    from runner import backends

    described = backends.device("jax")
    print(f"device: {described}")
    training = training_figures()
    print("training c3dsmall 11x64x64, batch 32: " + ", ".join(f"{k} {v:.4g}" for k, v in training.items()))
    shared = shared_gpu_oom()
    print(f"two trials per GPU, one asks for 60% of it: {json.dumps(shared)}")
    ok = described.startswith("GPU") and shared.get("oom") is True and training["cpu_over_gpu"] > 1
    print("all checks passed" if ok else "A CHECK FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
