"""Epoch checkpoints of one trial: everything needed to continue training exactly where it stopped.

A checkpoint is a folder `<trial folder>/checkpoint/ckpt-NNNNNN/` written under a temporary name and renamed
into place, then named by `latest.json` (written atomically); older generations are removed afterwards, so
only the latest checkpoint (and the best weights it holds) is kept. Nothing is pickled:

- `state.json`: round and epoch, completed rounds, the per-epoch history, the best-so-far logs, the early
  stopping state, the shuffling generator's state, and the identity (trial parameters, data fingerprint,
  checkpoint format and code version) a checkpoint must match to be used;
- `model.weights.h5`: the current weights; `best.weights.h5`: the best completed round's weights;
  `round_best.weights.h5`: the best weights of the round in progress (unchanged files are hard-linked);
- `optimizer.npz` (the optimizer's variables) and `rng.npz` (dropout seed states, the shuffled order, Python's
  and NumPy's generator states): arrays;
- within an epoch (a preemption stops at a batch, or `checkpoint_seconds` passed during a long epoch):
  `state.json`'s `batch` (batches of the epoch done) and `metrics.npz` (the epoch's running loss and accuracy
  totals), so the epoch continues at its next batch and ends with the same logs as if never stopped.

A checkpoint that cannot be read or does not match is never used: the trial starts over and says why.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runner.spec.trial_spec import CHECKPOINT_SECONDS
from runner.workdir import CHECKPOINT_FOLDER
from zoo import atomic

FORMAT = 2  # 2: the position inside an epoch
FOLDER = CHECKPOINT_FOLDER
LATEST = "latest.json"
DEFAULT_SECONDS = CHECKPOINT_SECONDS


class CheckpointError(Exception):
    """A checkpoint that cannot be used (unreadable, corrupt, or for other parameters, data or code)."""


@functools.cache
def code_version() -> str:
    """The code a checkpoint was written by: a digest of our package files (installed copies have no git
    commit), the Keras backend and the versions of Keras and of the backend. A checkpoint continues only under
    the very code that wrote it (a TensorFlow checkpoint never continues under JAX). Computed once per process."""
    import keras

    from runner import backends

    backend = keras.backend.backend()
    return (f"videosweep {_package_digest()}, keras {backends.version('keras')}, "
            f"{backend} {backends.version(backend)}")


CODE_PACKAGES = ("zoo", "runner")  # what trains a trial


def _package_digest() -> str:
    """A hash of every .py file of the packages that train a trial, by path and content."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for package in CODE_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(f"{path.relative_to(root).as_posix()}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def identity(spec_flat: dict[str, Any], fingerprint: str) -> dict[str, Any]:
    params = hashlib.sha256(json.dumps(spec_flat, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {"format": FORMAT, "code": code_version(), "params": params, "data": fingerprint}


@dataclass
class Snapshot:
    """A checkpoint's content in memory: JSON state plus the weights and arrays."""

    state: dict[str, Any]
    weights: list[np.ndarray] = field(repr=False)
    best_weights: list[np.ndarray] | None = field(default=None, repr=False)
    round_best_weights: list[np.ndarray] | None = field(default=None, repr=False)
    optimizer: list[np.ndarray] | None = field(default=None, repr=False)
    seeds: list[np.ndarray] = field(default_factory=list, repr=False)
    shuffle: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    metrics: list[np.ndarray] | None = field(default=None, repr=False)  # the epoch's running totals (mid-epoch)


def seed_variables(model: Any) -> list[Any]:
    """The model's random-seed states (dropout), which `get_weights` leaves out."""
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def shuffle_state(sequence: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Every random state shuffling depends on: the training sequence's generator (JSON: its 128-bit integers
    as text) and order, and Python's and NumPy's global generators (Keras shuffles the batch order with
    Python's `random`), as arrays."""
    import random

    state = sequence._rng.bit_generator.state
    _, python_state, _ = random.getstate()
    _, keys, position, has_gauss, gauss = np.random.get_state()
    arrays = {"order": np.asarray(sequence._order), "python_random": np.asarray(python_state, dtype=np.int64),
              "numpy_keys": np.asarray(keys), "numpy_rest": np.asarray([position, has_gauss, gauss], dtype=np.float64)}
    return json.loads(json.dumps(state, default=str), parse_int=str), arrays


def restore_shuffle(sequence: Any, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    import random

    def numbers(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: numbers(v) for k, v in value.items()}
        return int(value) if isinstance(value, str) and value.lstrip("-").isdigit() else value

    sequence._rng.bit_generator.state = numbers(state)
    sequence._order = np.asarray(arrays["order"])
    random.setstate((3, tuple(int(v) for v in arrays["python_random"]), None))
    position, has_gauss, gauss = arrays["numpy_rest"]
    np.random.set_state(("MT19937", np.asarray(arrays["numpy_keys"], dtype=np.uint32), int(position), int(has_gauss),
                         float(gauss)))


class Checkpointer:
    """Writes and reads one trial's checkpoints; at most every `seconds` unless forced."""

    def __init__(self, folder: Path, ident: dict[str, Any], seconds: float = DEFAULT_SECONDS) -> None:
        self.folder, self.ident, self.seconds = Path(folder), ident, seconds
        self.last_write = time.monotonic()
        self.written = 0
        self._versions: dict[str, Any] = {}  # weight file -> version last written (unchanged ones are linked)

    def due(self) -> bool:
        return time.monotonic() - self.last_write >= self.seconds

    # ------------------------------------------------------------------ writing

    def write(self, model: Any, state: dict[str, Any], *, best: tuple[Any, list[np.ndarray]] | None,
              round_best: tuple[Any, list[np.ndarray]] | None, optimizer: Any | None, sequence: Any,
              metrics: list[np.ndarray] | None = None) -> Path:
        """A new generation: weights, optimizer, seeds, order, state and (within an epoch) the epoch's running
        metric totals; `best`/`round_best` are (version, weights) so an unchanged file is linked from the previous
        generation, not rewritten."""
        self.folder.mkdir(parents=True, exist_ok=True)
        marker = self.folder.parent / atomic.TRIAL_MARKER  # the trial's folder is ours: a retry may replace it
        if not marker.exists():
            atomic.write_text(marker, "written by videosweep; --overwrite may replace this folder\n")
        previous = self._latest_dir()
        number = int(previous.name.split("-")[1]) + 1 if previous is not None else 1
        final = self.folder / f"ckpt-{number:06d}"
        staging = self.folder / f".ckpt-{number:06d}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        shuffle, shuffle_arrays = shuffle_state(sequence)
        current = model.get_weights()
        try:
            model.save_weights(staging / "model.weights.h5")
            for name, entry in (("best", best), ("round_best", round_best)):
                if entry is None:
                    continue
                version, weights = entry
                path = staging / f"{name}.weights.h5"
                old = previous / path.name if previous is not None else None
                if old is not None and old.is_file() and self._versions.get(name) == version:
                    os.link(old, path)
                else:
                    model.set_weights(weights)
                    model.save_weights(path)
                    self._versions[name] = version
            if optimizer is not None:
                np.savez(staging / "optimizer.npz", *[np.asarray(v) for v in optimizer.variables])
            if metrics is not None:
                np.savez(staging / "metrics.npz", *[np.asarray(v) for v in metrics])
            np.savez(staging / "rng.npz", **shuffle_arrays,
                     **{f"seed{i}": np.asarray(v) for i, v in enumerate(seed_variables(model))})
            atomic.write_json(staging / "state.json", {**state, "identity": self.ident, "shuffle": shuffle,
                                                       "has_best": best is not None,
                                                       "has_round_best": round_best is not None,
                                                       "has_optimizer": optimizer is not None,
                                                       "has_metrics": metrics is not None})
        finally:
            model.set_weights(current)
        os.replace(staging, final)
        atomic.write_json(self.folder / LATEST, {"dir": final.name})
        for old in self.folder.glob("ckpt-*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
        self.last_write = time.monotonic()
        self.written += 1
        return final

    def _latest_dir(self) -> Path | None:
        try:
            name = json.loads((self.folder / LATEST).read_text())["dir"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        path = self.folder / str(name)
        return path if path.is_dir() and path.parent == self.folder else None

    # ------------------------------------------------------------------ reading

    def exists(self) -> bool:
        return (self.folder / LATEST).is_file()

    def read(self, model: Any) -> Snapshot:
        """The latest checkpoint, read into arrays with `model` as the template; CheckpointError if it is
        unreadable, corrupt or written for other parameters, data or code. `model` keeps its weights."""
        path = self._latest_dir()
        if path is None:
            raise CheckpointError(f"{self.folder / LATEST} is missing or unreadable")
        try:
            state = json.loads((path / "state.json").read_text())
        except (OSError, ValueError) as err:
            raise CheckpointError(f"{path / 'state.json'} is unreadable ({type(err).__name__})") from None
        found = state.get("identity")
        if found != self.ident:
            what = [k for k in ("format", "code", "params", "data") if not isinstance(found, dict)
                    or found.get(k) != self.ident[k]]
            raise CheckpointError(f"the checkpoint in {path} was written for other {', '.join(what)} "
                                  f"({json.dumps({k: (found or {}).get(k) for k in what})})")
        current = model.get_weights()
        try:
            snapshot = Snapshot(state, self._weights(model, path / "model.weights.h5"))
            if state.get("has_best"):
                snapshot.best_weights = self._weights(model, path / "best.weights.h5")
            if state.get("has_round_best"):
                snapshot.round_best_weights = self._weights(model, path / "round_best.weights.h5")
            if state.get("has_optimizer"):
                with np.load(path / "optimizer.npz", allow_pickle=False) as arrays:
                    snapshot.optimizer = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
            if state.get("has_metrics"):
                with np.load(path / "metrics.npz", allow_pickle=False) as arrays:
                    snapshot.metrics = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
            with np.load(path / "rng.npz", allow_pickle=False) as arrays:
                seeds = sorted((n for n in arrays.files if n.startswith("seed")), key=lambda n: int(n[4:]))
                snapshot.seeds = [arrays[n] for n in seeds]
                snapshot.shuffle = {n: arrays[n] for n in arrays.files if not n.startswith("seed")}
        except CheckpointError:
            raise
        except Exception as err:  # noqa: BLE001 - h5py, numpy and Keras each raise their own
            raise CheckpointError(f"the checkpoint in {path} is corrupt ({type(err).__name__}: "
                                  f"{str(err)[:200]})") from None
        finally:
            model.set_weights(current)
        seeds = seed_variables(model)
        if len(seeds) != len(snapshot.seeds) or any(np.shape(v) != a.shape for v, a in zip(seeds, snapshot.seeds)):
            raise CheckpointError(f"the checkpoint in {path} does not fit this model (random-seed states)")
        return snapshot

    @staticmethod
    def _weights(model: Any, path: Path) -> list[np.ndarray]:
        if not path.is_file():
            raise CheckpointError(f"{path} is missing")
        model.load_weights(path)
        return model.get_weights()

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def restore_optimizer(optimizer: Any, model: Any, values: list[np.ndarray]) -> None:
    """Build the optimizer for the model and give it the saved variables (same order as written)."""
    optimizer.build(model.trainable_variables)
    variables = optimizer.variables
    if len(variables) != len(values) or any(tuple(v.shape) != a.shape for v, a in zip(variables, values)):
        raise CheckpointError("the checkpoint's optimizer state does not fit this model")
    for variable, value in zip(variables, values):
        variable.assign(value)


def add_metric_totals(model: Any, values: list[np.ndarray]) -> None:
    """Add the totals an epoch had run up before a checkpoint stopped it (Keras's loss and accuracy metrics are
    sums: total and count) to what the first batch after it recorded: the same float32 additions the epoch would
    have made without stopping, so it ends with the same logs."""
    sync_state(model)
    variables = model.metrics_variables
    if len(variables) != len(values) or any(tuple(v.shape) != a.shape for v, a in zip(variables, values)):
        raise CheckpointError("the checkpoint's running metrics do not fit this model")
    for variable, saved in zip(variables, values):
        variable.assign(np.asarray(saved, dtype=variable.dtype) + np.asarray(variable))


def sync_state(model: Any) -> None:
    """Inside `fit`, bring the model's variables up to date (JAX keeps an epoch's state outside them until its end;
    after this, its next batch reads them back, with whatever was assigned)."""
    sync = getattr(model, "jax_state_sync", None)
    if sync is not None:
        sync()
