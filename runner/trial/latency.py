"""Deployment figures of a trained trial, measured where it trained: the end-to-end model on raw frames
(for frozen-feature architectures the backbone joined to the head, exactly as `export` builds it).

`latency_ms` is the median of LATENCY_CALLS single-window calls after WARMUP_CALLS warm-up calls;
`throughput_fps` is windows per second at batch THROUGHPUT_BATCH (median of THROUGHPUT_CALLS calls);
`param_count` and `model_size_mb` (float32 weights) are of the whole end-to-end model.

A frozen backbone runs the same computation in every trial of its setting, so its figures are measured once per
machine, like a NAS latency table: kept in the process and in the cache folder (`latency/`), keyed by the setting,
the host, the device, the CPU threads and the backend's versions. A trial then times only its own head.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
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


def _timed(call: Any, inputs: Any) -> float:
    started = time.perf_counter()
    out = call(inputs)
    np.asarray(out)  # wait for the result (GPU work is asynchronous)
    return time.perf_counter() - started


@dataclass(frozen=True)
class Timings:
    """Median seconds per call of one stage (or a whole model): a single window, a batch of THROUGHPUT_BATCH."""

    single: float
    batch: float

    def __add__(self, other: Timings) -> Timings:  # stages run one after the other
        return Timings(self.single + other.single, self.batch + other.batch)


@dataclass(frozen=True)
class FrontFigures:
    """A frozen backbone's part of the end-to-end figures (frames -> features): its timings and parameters."""

    timings: Timings
    param_count: int


_FRONTS: dict[str, FrontFigures] = {}  # this process's memo of the machine's table (runner/trial/latency.py docstring)


def _graph(model: Any) -> Any:
    """The model as one traced graph for any batch size (traced once, on its first call); other backends use
    Keras's own compiled prediction step."""
    if not _tensorflow():
        return model.predict_on_batch
    import tensorflow as tf

    shape = [None if d is None else int(d) for d in model.input_shape]
    return tf.function(lambda x: model(x, training=False), input_signature=[tf.TensorSpec(shape, tf.float32)])


def front_key(spec: ModelSpec) -> dict[str, Any]:
    """What a frozen backbone's figures depend on: its setting and where and how it runs."""
    from runner import backends
    from zoo.deploy import is_windowed

    return {"backbone": spec.backbone, "weights": spec.weights, "pooling": spec.pooling,
            "frame_size": list(spec.frame_size or ()), "frames": spec.sequence_length if is_windowed(spec) else 1,
            "weights_file": spec.model_weights_path, "host": socket.gethostname(),
            "cpu_threads": os.environ.get("VIDEOSWEEP_CPU_THREADS", ""),
            **backends.describe()}  # backend, its version, Keras's version and the device


def _table_path(key: dict[str, Any], cache_dir: str | Path | None) -> Path:
    from zoo.cache import cache_root

    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_root(cache_dir) / "latency" / f"{digest}.json"


def _read_table(path: Path, key: dict[str, Any]) -> FrontFigures | None:
    """The stored figures, if the entry is for this key and holds sane numbers; the cache is not trusted further."""
    try:
        entry = json.loads(path.read_text())
        single, batch, params = float(entry["single"]), float(entry["batch"]), entry["param_count"]
    except (OSError, ValueError, TypeError, KeyError):
        return None
    sane = all(math.isfinite(v) and v > 0 for v in (single, batch)) and type(params) is int and params > 0
    return FrontFigures(Timings(single, batch), params) if entry.get("key") == key and sane else None


def _write_table(path: Path, key: dict[str, Any], figures: FrontFigures) -> None:
    from zoo import atomic

    entry = {"key": key, "single": figures.timings.single, "batch": figures.timings.batch,
             "param_count": figures.param_count}
    try:
        atomic.write_json(path, entry)
    except OSError:  # best effort (a full disk, a read-only cache): the next process measures again
        pass


def front_figures(spec: ModelSpec, cache_dir: str | Path | None = None) -> FrontFigures:
    """The frames -> features stage of a frozen-feature trial (the backbone as `export` joins it), measured once
    per machine and setting: from this process's memo, else the cache folder's table, else built and timed."""
    import zoo
    from zoo.deploy import frames_to_features

    model_spec = zoo.validated_spec(spec)
    key = front_key(model_spec)
    path = _table_path(key, cache_dir)
    if path.name not in _FRONTS:
        figures = _read_table(path, key)
        if figures is None:
            model = frames_to_features(model_spec)
            figures = FrontFigures(_time_stage(_graph(model), model.input_shape), int(model.count_params()))
            _write_table(path, key, figures)
        _FRONTS[path.name] = figures
    return _FRONTS[path.name]


def _constant(values: np.ndarray) -> Any:
    """An input already on the device (TensorFlow), or the array itself (other backends convert it)."""
    if not _tensorflow():
        return values
    import tensorflow as tf

    return tf.constant(values)


def _time_stage(call: Any, input_shape: tuple) -> Timings:
    """Medians of LATENCY_CALLS single-window and THROUGHPUT_CALLS batched calls, after warm-up, on fixed
    random inputs."""
    shape = tuple(1 if d is None else int(d) for d in input_shape)
    rng = np.random.default_rng(0)
    one = _constant(rng.uniform(0, 255, shape).astype(np.float32))
    batch = _constant(rng.uniform(0, 255, (THROUGHPUT_BATCH, *shape[1:])).astype(np.float32))
    for _ in range(WARMUP_CALLS):
        _timed(call, one)
    _timed(call, batch)
    return Timings(statistics.median(_timed(call, one) for _ in range(LATENCY_CALLS)),
                   statistics.median(_timed(call, batch) for _ in range(THROUGHPUT_CALLS)))


def measure(spec: ModelSpec, trained: Any, cache_dir: str | Path | None = None) -> dict[str, Any]:
    """The end-to-end model's latency, throughput, size and the device, as results.json entries.

    For frozen-feature architectures the end-to-end model is the backbone (as `export` joins it, zoo/deploy.py)
    followed by the trained head, two stages run one after the other: each is timed on its own and their medians
    add up. The backbone's figures come from the machine's table (`front_figures`), so a trial pays only for
    timing its own small head."""
    import zoo
    from runner import backends
    from zoo.deploy import head_of

    started = time.perf_counter()
    if zoo.get_architecture(spec.architecture).inputs == "frames":
        timings = _time_stage(_graph(trained), trained.input_shape)
        params = int(trained.count_params())
    else:
        front, head = front_figures(spec, cache_dir), head_of(trained)
        timings = front.timings + _time_stage(_graph(head), head.input_shape)
        params = front.param_count + int(head.count_params())
    return {
        "model_latency_ms": 1000.0 * timings.single,
        "model_throughput_fps": THROUGHPUT_BATCH / timings.batch,
        "model_e2e_param_count": params,
        "model_size_mb": params * 4 / 1e6,
        "model_latency_device": backends.device(backends.active()),
        "model_latency_seconds": time.perf_counter() - started,
    }
