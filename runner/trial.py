"""One trial: train one zoo model on one dataset by the research method and write its artefacts atomically.

Rounds of Adam at each learning rate (1e-3, 1e-4, 1e-5 by default), each starting from the best weights so
far, early stopping on validation accuracy, best round kept; categorical cross-entropy. Everything lands in a
staging folder renamed to `out` at the end, so a trial folder is either complete or absent.
"""

from __future__ import annotations

import datetime as dt
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import zoo
from runner.spec import TrialSpec
from zoo import atomic
from zoo.cache import load_features, load_frames
from zoo.data import Dataset
from zoo.errors import DataError

EpochHook = Callable[[int, dict[str, float]], None]  # (global step from 0, logs) -> None; may raise to stop

HISTORY_COLUMNS = ("round", "epoch", "step", "learning_rate", "loss", "accuracy", "val_loss", "val_accuracy",
                   "seconds")


@dataclass
class RoundResult:
    round: int
    learning_rate: float
    epochs_run: int
    best_epoch: int
    best_logs: dict[str, float]
    best_weights: list[np.ndarray] = field(repr=False)


def _now() -> str:
    return dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")


def prepare_source(spec: TrialSpec, dataset: Dataset, cache_dir: Path | None) -> tuple[np.ndarray, bool]:
    """The per-dataset array the windows index into: backbone features or resized frames (cached)."""
    arch = zoo.get_architecture(spec.model.architecture)
    if arch.inputs == "features":
        return load_features(dataset, spec.model, cache_dir)
    assert spec.model.frame_size is not None
    return load_frames(dataset, spec.model.frame_size, cache_dir)


def _sequences(spec: TrialSpec, dataset: Dataset, source: np.ndarray) -> dict[str, Any]:
    from zoo.windows import WindowSequence, window_ends

    length = spec.model.sequence_length
    windowed = "sequence_length" in zoo.get_architecture(spec.model.architecture).uses
    sequences = {}
    for split in ("train", "valid", "test"):
        ends = window_ends(dataset, split, length)
        if len(ends) == 0:
            raise DataError(f"no windows of {length} frames in the {split} split: its videos are shorter")
        sequences[split] = WindowSequence(
            source, ends, dataset.label_indices, dataset.num_classes, length, windowed,
            spec.training.batch_size, shuffle=split == "train", seed=spec.training.seed,
        )
    return sequences


def _fit_round(model: Any, sequences: dict[str, Any], spec: TrialSpec, round_index: int, rate: float,
               history: list[dict[str, Any]], on_epoch: EpochHook | None) -> RoundResult:
    import keras

    best: dict[str, Any] = {"val_accuracy": -1.0, "epoch": 0, "logs": {}, "weights": model.get_weights()}

    class Recorder(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = {k: float(v) for k, v in (logs or {}).items()}
            row = {"round": round_index, "epoch": epoch + 1, "step": len(history), "learning_rate": rate,
                   **{k: logs.get(k, float("nan")) for k in ("loss", "accuracy", "val_loss", "val_accuracy")},
                   "seconds": time.perf_counter() - self.started}
            history.append(row)
            if logs.get("val_accuracy", -1.0) > best["val_accuracy"]:
                best.update(val_accuracy=logs["val_accuracy"], epoch=epoch + 1, logs=logs,
                            weights=self.model.get_weights())
            if on_epoch is not None:
                on_epoch(row["step"], row)

    model.compile(optimizer=keras.optimizers.Adam(learning_rate=rate), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    stopper = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=spec.training.patience)
    before = len(history)
    model.fit(sequences["train"], validation_data=sequences["valid"], epochs=spec.training.epochs,
              callbacks=[stopper, Recorder()], verbose=0)
    return RoundResult(round_index, rate, len(history) - before, best["epoch"], best["logs"], best["weights"])


def train_rounds(model: Any, sequences: dict[str, Any], spec: TrialSpec,
                 on_epoch: EpochHook | None = None) -> tuple[list[RoundResult], RoundResult, pd.DataFrame]:
    """Run every learning-rate round from the best weights so far; the model ends on the best weights."""
    history: list[dict[str, Any]] = []
    rounds: list[RoundResult] = []
    best: RoundResult | None = None
    for index, rate in enumerate(spec.training.learning_rates, start=1):
        result = _fit_round(model, sequences, spec, index, rate, history, on_epoch)
        rounds.append(result)
        if best is None or result.best_logs.get("val_accuracy", -1) > best.best_logs.get("val_accuracy", -1):
            best = result
        model.set_weights(best.best_weights)
    assert best is not None
    return rounds, best, pd.DataFrame(history, columns=list(HISTORY_COLUMNS))


def _predict(model: Any, sequence: Any, dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities of every window of an unshuffled sequence, in order, and the true labels."""
    return np.asarray(model.predict(sequence, verbose=0)), dataset.label_indices[sequence.ends]


def loss_and_accuracy(probabilities: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Categorical cross-entropy (clipped as Keras does) and accuracy, from the predictions already made."""
    picked = np.clip(probabilities[np.arange(len(truth)), truth], 1e-7, 1.0)
    return float(-np.log(picked).mean()), float((probabilities.argmax(axis=1) == truth).mean())


def _model_summary(model: Any) -> str:
    buffer = io.StringIO()
    model.summary(print_fn=lambda line, **_: buffer.write(line + "\n"))
    return buffer.getvalue()


def run_trial(spec: TrialSpec, dataset: Dataset, out: Path, *, cache_dir: Path | None = None,
              on_epoch: EpochHook | None = None, overwrite: bool = False,
              extra_results: dict[str, Any] | None = None,
              on_model: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Train `spec` on `dataset`, write the artefacts into `out`, return results.json's content.

    `on_model` receives the trained Keras model once the folder is in place (e.g. to log it elsewhere).
    """
    import keras
    import tensorflow as tf

    from runner import latency
    from runner.plots import confusion_matrix, write_confusion_matrices

    model_spec = zoo.validated_spec(spec.model)
    spec = TrialSpec(model=model_spec, training=spec.training)
    with atomic.atomic_dir(out, overwrite=overwrite, marker=atomic.TRIAL_MARKER) as staging:
        source, cache_hit = prepare_source(spec, dataset, cache_dir)
        sequences = _sequences(spec, dataset, source)
        keras.utils.set_random_seed(spec.training.seed)
        tf.config.experimental.enable_op_determinism()
        # A full gc.collect() here costs ~0.4 s a trial; workers are recycled to bound memory instead.
        keras.backend.clear_session(free_memory=False)
        model = zoo.create_model(model_spec, dataset.num_classes)

        results: dict[str, Any] = {**spec.flat(), **(extra_results or {})}
        results.update({f"data_total_rows_{s}": len(sequences[s].ends) for s in ("train", "valid", "test")})
        results.update(num_classes=dataset.num_classes, classes=dataset.classes, data_root=str(dataset.root),
                       data_fingerprint=dataset.fingerprint, model_param_count=int(model.count_params()),
                       num_features=int(source.shape[-1]) if source.ndim == 2 else None,
                       cache_hit=cache_hit, fit_dt_train_start=_now())
        started = time.perf_counter()
        rounds, best, history = train_rounds(model, sequences, spec, on_epoch)
        results.update(fit_dt_train_end=_now(), fit_dt_train_duration_seconds=time.perf_counter() - started)

        results["fit_dt_test_start"] = _now()
        started = time.perf_counter()
        probabilities, truth = _predict(model, sequences["test"], dataset)
        test_loss, test_accuracy = loss_and_accuracy(probabilities, truth)  # no second pass over the test set
        results.update(fit_dt_test_end=_now(), fit_dt_test_duration_seconds=time.perf_counter() - started)
        results.update(latency.measure(model_spec, model))  # end-to-end on raw frames, on this machine

        results.update(
            fit_best_round=best.round, fit_num_epochs=int(len(history)),
            fit_train_acc=best.best_logs.get("accuracy"), fit_train_loss=best.best_logs.get("loss"),
            fit_val_acc=best.best_logs.get("val_accuracy"), fit_val_loss=best.best_logs.get("val_loss"),
            fit_test_acc=float(test_accuracy), fit_test_loss=float(test_loss),
            **{f"fit_stopped_epoch{r.round}": r.epochs_run for r in rounds},
            **{f"fit_best_epoch{r.round}": r.best_epoch for r in rounds},
        )
        ends = sequences["test"].ends
        atomic.write_json(staging / "params.json", {**spec.flat(), "data_root": str(dataset.root)})
        atomic.write_json(staging / "results.json", results)
        atomic.write_text(staging / "fit_history.csv", history.to_csv(index=False))
        atomic.write_text(staging / "model_summary.txt", _model_summary(model))
        atomic.save_npy(staging / "test_predictions.npy", probabilities.astype(np.float32))
        windows = dataset.labels.iloc[ends][["video", "frame", "label"]].assign(
            prediction=[dataset.classes[i] for i in probabilities.argmax(axis=1)])
        atomic.write_text(staging / "test_windows.csv", windows.to_csv(index=False))
        matrix = confusion_matrix(truth, probabilities.argmax(axis=1), dataset.num_classes)
        write_confusion_matrices(matrix, dataset.classes, staging)
        model.save(staging / "model_best.keras")
    if on_model is not None:
        on_model(model)
    return results
