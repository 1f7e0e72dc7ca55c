"""Deployment figures of a trained trial, measured where it trained: the end-to-end model on raw frames
(for frozen-feature architectures the backbone joined to the head, exactly as `export` builds it).

`latency_ms` is the median of LATENCY_CALLS single-window calls after WARMUP_CALLS warm-up calls;
`throughput_fps` is windows per second at batch THROUGHPUT_BATCH (median of THROUGHPUT_CALLS calls);
`param_count` and `model_size_mb` (float32 weights) are of the whole end-to-end model.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Any

import numpy as np

from zoo.deploy import join_backbone
from zoo.spec import ModelSpec

WARMUP_CALLS = 3
LATENCY_CALLS = 20
THROUGHPUT_BATCH = 32
THROUGHPUT_CALLS = 3

# results.json keys (the research code's style: fit_* for training, model_* for the model)
RESULT_KEYS = ("model_latency_ms", "model_throughput_fps", "model_e2e_param_count", "model_size_mb",
               "model_latency_device", "model_latency_seconds")


def device_name() -> str:
    """Where the measurement ran: the GPU the worker sees, else the CPU (model and visible cores)."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        try:
            details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
            return f"GPU {details.get('device_name', gpus[0].name)}"
        except Exception:  # noqa: BLE001 - details are best effort
            return f"GPU {gpus[0].name}"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"CPU {platform.processor() or platform.machine()} ({cores} cores)"


def _timed(call: Any, inputs: Any) -> float:
    started = time.perf_counter()
    out = call(inputs)
    np.asarray(out)  # wait for the result (GPU work is asynchronous)
    return time.perf_counter() - started


def measure(spec: ModelSpec, trained: Any) -> dict[str, Any]:
    """The end-to-end model's latency, throughput, size and the device, as results.json entries."""
    import tensorflow as tf

    started = time.perf_counter()
    model = join_backbone(spec, trained)
    shape = tuple(1 if d is None else int(d) for d in model.input_shape)
    rng = np.random.default_rng(0)
    one = tf.constant(rng.uniform(0, 255, shape).astype(np.float32))
    batch = tf.constant(rng.uniform(0, 255, (THROUGHPUT_BATCH, *shape[1:])).astype(np.float32))
    call = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    for _ in range(WARMUP_CALLS):
        _timed(call, one)
    _timed(call, batch)
    single = [_timed(call, one) for _ in range(LATENCY_CALLS)]
    batched = [_timed(call, batch) for _ in range(THROUGHPUT_CALLS)]
    params = int(model.count_params())
    return {
        "model_latency_ms": 1000.0 * statistics.median(single),
        "model_throughput_fps": THROUGHPUT_BATCH / statistics.median(batched),
        "model_e2e_param_count": params,
        "model_size_mb": params * 4 / 1e6,
        "model_latency_device": device_name(),
        "model_latency_seconds": time.perf_counter() - started,
    }
