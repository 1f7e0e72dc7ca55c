"""Keras backends: which one a process uses, whether it is installed, and how a slot's worker sets it up.

The backend is chosen by `--backend` (run, resume, worker, train), the sweep's `resources.backend`, or
`KERAS_BACKEND`, in that order; default tensorflow. It must be in `os.environ["KERAS_BACKEND"]` before Keras is
first imported, so `activate` refuses to switch a process whose Keras already runs another backend. Nothing
here imports a backend at module level: the scheduler and the CLI stay free of TensorFlow/JAX/PyTorch.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import platform
import re
import sys
from importlib import metadata
from pathlib import Path
from collections.abc import Iterator
from typing import Any

from zoo.errors import UserError

BACKENDS = ("tensorflow", "jax", "torch")
DEFAULT = "tensorflow"
# How to install each backend (the pyproject extras).
INSTALL = {"tensorflow": "pip install 'videosweep[cpu]' (or [gpu] with CUDA)",
           "jax": "pip install 'videosweep[jax]' (or [jax-cuda] with CUDA)", "torch": "pip install torch"}
# Distributions whose version is the backend's version (tensorflow-cpu is the [cpu] extra's wheel).
_DISTRIBUTIONS = {"tensorflow": ("tensorflow", "tensorflow-cpu"), "jax": ("jax",), "torch": ("torch",)}
# Every model and weights file read from the shared store is loaded with Keras's safe_mode: Keras before 3.14
# lets planted files around it (CVE-2025-1550, -9906, -8747, CVE-2026-1462, a vocabulary-file read, an HDF5
# denial of service). pyproject.toml's floor is the same.
KERAS_FLOOR = (3, 14)


def installed(name: str) -> bool:
    """Whether `name` can be imported here (a module blocked with sys.modules[name] = None is not)."""
    if name in sys.modules:
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def installed_backends() -> list[str]:
    return [name for name in BACKENDS if installed(name)]


def problem(name: str) -> str | None:
    """Why `name` cannot be used here (one line), or None when it can."""
    found = ", ".join(installed_backends()) or "none"
    if name not in BACKENDS:
        return f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)} (installed: {found})"
    if not installed(name):
        return f"backend {name} is not installed (installed: {found}); {INSTALL[name]}"
    return None


def chosen(given: str | None = None) -> str:
    """The backend for this process: `given` (command line or sweep file), else $KERAS_BACKEND, else tensorflow
    (or, where TensorFlow is not installed, the first backend that is)."""
    name = given or os.environ.get("KERAS_BACKEND")
    if not name:  # tensorflow where it is installed, else the first backend that is
        name = DEFAULT if installed(DEFAULT) else next(iter(installed_backends()), DEFAULT)
    return name.strip().lower()


def require(name: str, where: str = "--backend") -> str:
    """`name` if it is known and installed, else a one-line UserError naming what is installed."""
    reason = problem(name)
    if reason is not None:
        raise UserError(f"{where}: {reason}")
    return name


def keras_problem(installed_version: str | None) -> str | None:
    """Why this Keras must not load models from the store (one line), or None (none installed: nothing loads)."""
    if installed_version is None:
        return None
    found = re.match(r"(\d+)\.(\d+)", installed_version)
    if found and (int(found[1]), int(found[2])) >= KERAS_FLOOR:
        return None
    floor = ".".join(map(str, KERAS_FLOOR))
    return (f"keras {installed_version} is older than {floor}, whose safe_mode is bypassed by planted model files; "
            f"pip install 'keras>={floor}'")


def activate(name: str, where: str = "--backend") -> str:
    """Make `name` this process's Keras backend (before Keras is imported); refuse a process already on another,
    or a Keras too old to load the store's models safely."""
    require(name, where)
    reason = keras_problem(version("keras"))
    if reason is not None:
        raise UserError(reason)
    keras = sys.modules.get("keras")
    if keras is not None and getattr(keras, "backend", None) is not None and keras.backend.backend() != name:
        raise UserError(f"{where}: Keras already runs on {keras.backend.backend()} in this process; "
                        f"set KERAS_BACKEND={name} before starting it")
    os.environ["KERAS_BACKEND"] = name
    if name == "tensorflow":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return name


def version(name: str) -> str | None:
    for distribution in _DISTRIBUTIONS.get(name, (name,)):
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return None


def slot_environment(backend: str, gpu: str | None, trials_per_gpu: int = 1,
                     cpu_threads: int | None = None) -> dict[str, str]:
    """The environment a slot's worker sets before importing its backend (a pure function, tested on CPU).

    GPU indices are nvidia-smi's (PCI bus order); several trials on one GPU each get 1/N of its memory on JAX
    (which would otherwise preallocate 75%), memory growth on TensorFlow; PyTorch allocates on demand.
    """
    env = {"KERAS_BACKEND": backend, "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
           "CUDA_VISIBLE_DEVICES": gpu if gpu is not None else ""}
    if backend == "tensorflow":
        env["TF_CPP_MIN_LOG_LEVEL"] = "2"
        if gpu is not None:
            env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
    elif backend == "jax":
        if gpu is None:
            env["JAX_PLATFORMS"] = "cpu"
        elif trials_per_gpu > 1:
            env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
            env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{0.95 / trials_per_gpu:.3f}"
    if cpu_threads:
        env["OMP_NUM_THREADS"] = env["VIDEOSWEEP_CPU_THREADS"] = str(cpu_threads)  # the latter: frame decoding
        if backend == "tensorflow":
            env["TF_NUM_INTEROP_THREADS"] = "1"
            env["TF_NUM_INTRAOP_THREADS"] = str(cpu_threads)
    return env


def compilation_cache(cache_dir: str | Path | None = None) -> Path:
    """JAX's persistent compilation cache: native executables that JAX runs, so the folder is private (0700)
    and one writable by others or owned by another user is refused in one line."""
    from zoo.atomic import private_dir
    from zoo.cache import cache_root

    return private_dir(cache_root(cache_dir) / "jax-compilation", "JAX compilation cache")


def configure(backend: str, cpu_threads: int | None = None, cache_dir: str | Path | None = None) -> None:
    """After the slot's environment is set: import the backend once and apply what environment variables cannot."""
    if backend == "tensorflow":
        from zoo.stdio import import_tensorflow

        tf: Any = import_tensorflow()  # its logger is set to ERROR: every trial retraces, warnings would be noise
        if cpu_threads:
            tf.config.threading.set_intra_op_parallelism_threads(cpu_threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        for device in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(device, True)
    elif backend == "jax":
        import jax

        # Compile once per machine: later trials, workers and sweeps load the executables from the cache folder.
        jax.config.update("jax_compilation_cache_dir", str(compilation_cache(cache_dir)))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    elif backend == "torch":
        import torch

        if cpu_threads:
            torch.set_num_threads(cpu_threads)


# Imported by Keras and TensorFlow when installed, for what a worker never uses: scikit-learn wrappers, an image
# gallery (matplotlib), TFLite's JAX jit. Each import is optional there (try/except ImportError).
UNUSED_BY_WORKERS = ("sklearn", "matplotlib", "jax")


@contextlib.contextmanager
def without_unused_imports(backend: str) -> Iterator[None]:
    """Import the backend and Keras in this block to skip the modules of UNUSED_BY_WORKERS they would load (about a
    third of a worker's start-up on CPU); afterwards they import as usual (the trial's plots need matplotlib)."""
    blocked = [name for name in UNUSED_BY_WORKERS if name not in sys.modules and name != backend]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment] - None makes `import name` raise ImportError
    try:
        yield
    finally:
        for name in blocked:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


def deterministic(backend: str) -> None:
    """Same seed, same history: TensorFlow needs op determinism; JAX on CPU is deterministic by construction."""
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    elif backend == "torch":
        import torch

        torch.use_deterministic_algorithms(True, warn_only=True)


def cpu_name() -> str:
    """This process's CPU: its model and the cores it may run on (a slot's share where it is pinned)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"CPU {platform.processor() or platform.machine()} ({cores} cores)"


def _accelerator(backend: str) -> str | None:
    """The first accelerator `backend` computes on, e.g. 'GPU NVIDIA H100 80GB HBM3'; None on the CPU."""
    if backend == "jax":
        import jax

        first = jax.devices()[0]
        kind = str(getattr(first, "device_kind", ""))
        if first.platform == "cpu":
            return None
        return first.platform.upper() if kind.lower() == first.platform else f"{first.platform.upper()} {kind}"
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            return None
        try:
            details = tf.config.experimental.get_device_details(gpus[0])
        except Exception:  # noqa: BLE001 - details are best effort
            details = {}
        return f"GPU {details.get('device_name', gpus[0].name)}"
    if backend == "torch":
        import torch

        return f"GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else None
    return None


@functools.lru_cache(maxsize=len(BACKENDS))
def device(backend: str) -> str:
    """Where this process's backend computes, e.g. 'GPU NVIDIA H100 80GB HBM3' or 'CPU x86_64 (16 cores)'.

    The one name of the device: results.json's `device` and `model_latency_device`, the trial run's `device`
    and `videosweep.latency_device` tags and the latency table's key all come from here. A process keeps its
    device, so it is asked once."""
    try:
        return _accelerator(backend) or cpu_name()
    except Exception:  # noqa: BLE001 - a description only
        return "unknown"


def active() -> str:
    """The backend Keras runs on in this process (importing Keras)."""
    import keras

    return str(keras.backend.backend())


def describe(backend: str | None = None) -> dict[str, Any]:
    """What a trial records: backend, its version, Keras's version and the device."""
    backend = backend or active()
    return {"backend": backend, "backend_version": version(backend), "keras_version": version("keras"),
            "device": device(backend)}
