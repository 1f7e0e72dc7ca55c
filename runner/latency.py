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

from zoo.spec import ModelSpec

WARMUP_CALLS = 3
LATENCY_CALLS = 20
THROUGHPUT_BATCH = 32
THROUGHPUT_CALLS = 3

# results.json keys (the research code's style: fit_* for training, model_* for the model)
RESULT_KEYS = ("model_latency_ms", "model_throughput_fps", "model_e2e_param_count", "model_size_mb",
               "model_latency_device", "model_latency_seconds")


def _tensorflow() -> bool:
    import keras

    return keras.backend.backend() == "tensorflow"


def device_name() -> str:
    """Where the measurement ran: the GPU the worker sees, else the CPU (model and visible cores)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpu = f"CPU {platform.processor() or platform.machine()} ({cores} cores)"
    if not _tensorflow():  # other backends name their accelerator themselves
        from runner import backends

        device = str(backends.describe(backends.active()).get("device", ""))
        return device if device and not device.lower().startswith("cpu") else cpu
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        try:
            details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
            return f"GPU {details.get('device_name', gpus[0].name)}"
        except Exception:  # noqa: BLE001 - details are best effort
            return f"GPU {gpus[0].name}"
    return cpu


def _timed(call: Any, inputs: Any) -> float:
    started = time.perf_counter()
    out = call(inputs)
    np.asarray(out)  # wait for the result (GPU work is asynchronous)
    return time.perf_counter() - started


_FRONTS: dict[tuple, tuple[Any, Any]] = {}  # per worker process: backbone graphs, built and traced once
MAX_FRONTS = 4


def _graph(model: Any) -> Any:
    """The model as one traced graph for any batch size (traced once, on its first call); other backends use
    Keras's own compiled prediction step."""
    if not _tensorflow():
        return model.predict_on_batch
    import tensorflow as tf

    shape = [None if d is None else int(d) for d in model.input_shape]
    return tf.function(lambda x: model(x, training=False), input_signature=[tf.TensorSpec(shape, tf.float32)])


def _front(spec: ModelSpec) -> tuple[Any, Any]:
    """(frames -> features model, its graph) for a frozen-feature trial, shared by the trials of a process that
    use the same backbone setting, as the feature cache is: the backbone is built and traced once, not per trial."""
    import zoo
    from zoo.deploy import frames_to_features, is_windowed

    model_spec = zoo.validated_spec(spec)
    key = (model_spec.backbone, model_spec.weights, model_spec.pooling, model_spec.frame_size,
           model_spec.sequence_length if is_windowed(model_spec) else 1, model_spec.model_weights_path)
    if key not in _FRONTS:
        while len(_FRONTS) >= MAX_FRONTS:
            _FRONTS.pop(next(iter(_FRONTS)))
        front = frames_to_features(model_spec)
        _FRONTS[key] = (front, _graph(front))
    return _FRONTS[key]


def _constant(values: np.ndarray) -> Any:
    """An input already on the device (TensorFlow), or the array itself (other backends convert it)."""
    if not _tensorflow():
        return values
    import tensorflow as tf

    return tf.constant(values)


def measure(spec: ModelSpec, trained: Any) -> dict[str, Any]:
    """The end-to-end model's latency, throughput, size and the device, as results.json entries.

    For frozen-feature architectures the timed call runs raw frames through the backbone (as `export` joins
    it, zoo/deploy.py) and then the trained head: the same computation as the exported model, as two graphs."""
    import zoo
    from zoo.deploy import head_of

    started = time.perf_counter()
    if zoo.get_architecture(spec.architecture).inputs == "frames":
        stages, shape = [_graph(trained)], trained.input_shape
        params = int(trained.count_params())
    else:
        front, front_graph = _front(spec)
        head = head_of(trained)
        stages, shape = [front_graph, _graph(head)], front.input_shape
        params = int(front.count_params()) + int(head.count_params())

    def call(x: Any) -> Any:
        for stage in stages:
            x = stage(x)
        return x

    shape = tuple(1 if d is None else int(d) for d in shape)
    rng = np.random.default_rng(0)
    one = _constant(rng.uniform(0, 255, shape).astype(np.float32))
    batch = _constant(rng.uniform(0, 255, (THROUGHPUT_BATCH, *shape[1:])).astype(np.float32))
    for _ in range(WARMUP_CALLS):
        _timed(call, one)
    _timed(call, batch)
    single = [_timed(call, one) for _ in range(LATENCY_CALLS)]
    batched = [_timed(call, batch) for _ in range(THROUGHPUT_CALLS)]
    return {
        "model_latency_ms": 1000.0 * statistics.median(single),
        "model_throughput_fps": THROUGHPUT_BATCH / statistics.median(batched),
        "model_e2e_param_count": params,
        "model_size_mb": params * 4 / 1e6,
        "model_latency_device": device_name(),
        "model_latency_seconds": time.perf_counter() - started,
    }
