"""One trial: train one zoo model on one dataset by the research method and write its artefacts atomically.

Rounds of Adam at each learning rate (1e-3, 1e-4, 1e-5 by default), each starting from the best weights so
far, early stopping on validation accuracy, best round kept; categorical cross-entropy. Everything lands in a
staging folder renamed to `out` at the end, so a trial folder is either complete or absent.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import zoo
from runner import preemption
from runner.spec.trial_spec import TrialSpec
from runner.trial.checkpoints import DEFAULT_SECONDS
from zoo import atomic
from zoo.baselines import result_entries, split_baselines
from zoo.cache import load_features, load_frames
from zoo.data import Dataset
from zoo.errors import DataError, one_line

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
            spec.training.batch_size, shuffle=split == "train", seed=spec.run_seed,
        )
    return sequences


@dataclass
class TrainingOutcome:
    """How the rounds ended: the completed rounds (with a partial one when paused), the best, the history."""

    rounds: list[RoundResult]
    best: RoundResult
    history: pd.DataFrame
    paused: bool = False  # stopped at the epoch budget with training left: continues from its checkpoint
    resumed_from: int = 0  # epochs restored from a checkpoint (0: trained from scratch)
    resumed_batch: int = 0  # and batches of the epoch after them


class _Training:
    """The rounds of one trial as a resumable state machine: round and epoch in progress, completed rounds,
    the best weights so far and the early-stopping state, checkpointed after epochs and at every round's end."""

    def __init__(self, model: Any, sequences: dict[str, Any], spec: TrialSpec, on_epoch: EpochHook | None,
                 checkpoints: Any = None, budget: int | None = None,
                 on_rows: Callable[[list[dict[str, Any]]], None] | None = None) -> None:
        self.model, self.sequences, self.spec, self.on_epoch = model, sequences, spec, on_epoch
        self.checkpoints, self.budget, self.on_rows = checkpoints, budget, on_rows
        self.history: list[dict[str, Any]] = []
        self.rounds: list[RoundResult] = []
        self.best_index: int | None = None  # index of the best completed round in self.rounds
        self.best_version = 0
        self.round, self.epoch = 1, 0  # the round in progress (1-based) and epochs done in it
        self.batch, self.epoch_seconds = 0, 0.0  # batches done in the epoch in progress (a checkpoint stopped it)
        self.metric_totals: list[np.ndarray] | None = None  # that epoch's running loss and accuracy totals
        self.round_best: dict[str, Any] | None = None
        self.round_best_version = 0
        self.stopper_state: dict[str, Any] | None = None
        self.shuffle_later: tuple[dict[str, Any], Any] | None = None  # restored at train begin (mid-round)
        self.optimizer_values: list[np.ndarray] | None = None
        self.resumed_from = self.resumed_batch = 0  # where a checkpoint continued: epochs, then batches of the next
        self.paused = False

    # ------------------------------------------------------------------ checkpoints

    def _state(self, stopper: Any = None, within: tuple[int, float] | None = None) -> dict[str, Any]:
        batch, seconds = within or (0, 0.0)
        rounds = [{"round": r.round, "learning_rate": r.learning_rate, "epochs_run": r.epochs_run,
                   "best_epoch": r.best_epoch, "best_logs": r.best_logs} for r in self.rounds]
        round_best = None if self.round_best is None else {k: v for k, v in self.round_best.items() if k != "weights"}
        return {"round": self.round, "epoch": self.epoch, "batch": batch, "epoch_seconds": seconds,
                "step": len(self.history), "history": self.history, "rounds": rounds, "best_index": self.best_index,
                "round_best": round_best, "stopper": None if stopper is None else _stopper_state(stopper)}

    def checkpoint(self, stopper: Any = None, force: bool = False, within: tuple[int, float] | None = None) -> None:
        """Write a checkpoint if one is due (or `force`): between epochs, or `within` one as (batches of it done,
        its seconds so far), with its running metric totals."""
        if self.checkpoints is None:
            if self.on_rows is not None and within is None:
                self.on_rows(self.history)
            return
        if not (force or self.checkpoints.due()):
            return
        if within is not None:
            from runner.trial.checkpoints import sync_state

            sync_state(self.model)
        best = (self.best_version, self.rounds[self.best_index].best_weights) if self.best_index is not None else None
        round_best = (self.round_best_version, self.round_best["weights"]) if self.round_best is not None else None
        optimizer = self.model.optimizer if stopper is not None else None
        totals = None if within is None else [np.asarray(v) for v in self.model.metrics_variables]
        self.checkpoints.write(self.model, self._state(stopper, within), best=best, round_best=round_best,
                               optimizer=optimizer, sequence=self.sequences["train"], metrics=totals)
        if self.on_rows is not None:
            self.on_rows(self.history)  # MLflow gets each epoch once it is durable: never twice, never lost

    def restore(self, snapshot: Any) -> None:
        """Continue from a checkpoint (see runner/trial/checkpoints.py): weights, seeds, rounds, history, state."""
        from runner.trial.checkpoints import restore_shuffle, seed_variables

        state = snapshot.state
        self._check_state(state, snapshot)
        self.history = [dict(row) for row in state["history"]]
        self.round, self.epoch = int(state["round"]), int(state["epoch"])
        self.batch, self.epoch_seconds = int(state["batch"]), float(state["epoch_seconds"])
        self.metric_totals = snapshot.metrics
        self.best_index = state["best_index"]
        for index, r in enumerate(state["rounds"]):
            weights = snapshot.best_weights if index == self.best_index else []
            self.rounds.append(RoundResult(int(r["round"]), float(r["learning_rate"]), int(r["epochs_run"]),
                                           int(r["best_epoch"]), dict(r["best_logs"]), weights))
        if state["round_best"] is not None:
            self.round_best = {**state["round_best"], "weights": snapshot.round_best_weights}
        self.stopper_state = state["stopper"]
        self.optimizer_values = snapshot.optimizer
        self.model.set_weights(snapshot.weights)
        for variable, value in zip(seed_variables(self.model), snapshot.seeds):
            variable.assign(value)
        shuffle = (state["shuffle"], snapshot.shuffle)
        # fit() draws from these generators before training begins (its build reads batches, its start reshuffles):
        # at a round's start that happened in the uninterrupted run too, so the state goes back before fit;
        # mid-round it did not, so the state goes back again once training begins.
        restore_shuffle(self.sequences["train"], *shuffle)
        if self.epoch > 0 or self.batch > 0:
            self.shuffle_later = shuffle
        self.resumed_from, self.resumed_batch = len(self.history), self.batch
        if self.on_rows is not None:
            self.on_rows(self.history)  # epochs a killed attempt had checkpointed but not yet logged

    def _check_state(self, state: dict[str, Any], snapshot: Any) -> None:
        """A state this trial could have written, or CheckpointError: an edited or damaged `state.json` must
        start training over, not fail the trial later (and again on every retry)."""
        from runner.trial.checkpoints import CheckpointError

        problem = _state_problem(state, snapshot, len(self.spec.training.learning_rates), self.spec.training.epochs,
                                 len(self.sequences["train"]))
        if problem is not None:
            raise CheckpointError(f"the checkpoint's state does not fit this trial ({problem})")

    # ------------------------------------------------------------------ training

    def _budget_left(self) -> bool:
        return self.budget is None or len(self.history) < self.budget

    def _fit_round(self, rate: float) -> RoundResult | None:
        """Train the round in progress to its end (a RoundResult) or to the epoch budget (None: paused)."""
        import keras

        from runner import fault_injection
        from runner.trial.checkpoints import add_metric_totals, restore_optimizer, restore_shuffle, shuffle_state

        training, spec, train = self, self.spec, self.sequences["train"]
        if self.round_best is None:
            self.round_best = {"val_accuracy": -1.0, "epoch": 0, "logs": {}, "weights": self.model.get_weights()}
            self.round_best_version += 1
        restored_stopper, restored_shuffle = self.stopper_state, self.shuffle_later
        self.stopper_state = self.shuffle_later = None
        within, carried_seconds, totals = self.batch, self.epoch_seconds, self.metric_totals
        self.batch, self.epoch_seconds, self.metric_totals = 0, 0.0, None
        periodic = self.checkpoints is not None and self.checkpoints.seconds > 0  # long epochs: inside them too

        class Stopper(keras.callbacks.EarlyStopping):
            carried = restored_stopper  # the round's early-stopping state when continuing mid-round

            def on_train_begin(self, logs: dict | None = None) -> None:
                super().on_train_begin(logs)
                if self.carried is not None:
                    self.wait, self.stopped_epoch = self.carried["wait"], self.carried["stopped_epoch"]
                    self.best, self.best_epoch = self.carried["best"], self.carried["best_epoch"]

        class Recorder(keras.callbacks.Callback):
            offset = within  # batches of the first epoch trained before this fit (continuing inside it)

            def on_train_begin(self, logs: dict | None = None) -> None:
                nonlocal restored_shuffle
                if restored_shuffle is not None:  # after whatever fit's start drew
                    restore_shuffle(train, *restored_shuffle)
                    restored_shuffle = None

            def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
                nonlocal carried_seconds
                self.started, carried_seconds = time.perf_counter() - carried_seconds, 0.0

            def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
                nonlocal totals
                done = self.offset + batch + 1
                if totals is not None:  # the first batch after the checkpoint: the epoch's totals so far join in
                    add_metric_totals(self.model, totals)
                    totals = None
                fault_injection.after_batch(spec, len(training.history), done,
                                            (training.resumed_from, training.resumed_batch))
                preempted = preemption.requested.is_set()  # SIGTERM: checkpoint here, then stop
                if preempted or (periodic and done < len(train) and training.checkpoints.due()):
                    training.checkpoint(stopper, force=True, within=(done, time.perf_counter() - self.started))
                if preempted:
                    raise preemption.Preempted(f"stopped at batch {done} of {len(train)} in epoch "
                                               f"{training.epoch + 1} of round {training.round}")

            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                self.offset = 0
                logs = {k: float(v) for k, v in (logs or {}).items()}
                history = training.history
                row = {"round": training.round, "epoch": epoch + 1, "step": len(history), "learning_rate": rate,
                       **{k: logs.get(k, float("nan")) for k in ("loss", "accuracy", "val_loss", "val_accuracy")},
                       "seconds": time.perf_counter() - self.started}
                history.append(row)
                training.epoch = epoch + 1
                best = training.round_best
                if logs.get("val_accuracy", -1.0) > best["val_accuracy"]:
                    best.update(val_accuracy=logs["val_accuracy"], epoch=epoch + 1, logs=logs,
                                weights=self.model.get_weights())
                    training.round_best_version += 1
                round_ends = self.model.stop_training or epoch + 1 >= spec.training.epochs
                if not round_ends:
                    pause = not training._budget_left()
                    if pause:
                        self.model.stop_training = training.paused = True
                    training.checkpoint(stopper, force=pause)  # a round's end is checkpointed after it
                fault_injection.after_epoch(spec, len(history), training.resumed_from)
                if training.on_epoch is not None:
                    training.on_epoch(row["step"], row)

        model = self.model
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=rate), loss="categorical_crossentropy",
                      metrics=["accuracy"])
        if self.optimizer_values is not None:
            restore_optimizer(model.optimizer, model, self.optimizer_values)
            self.optimizer_values = None
        stopper = Stopper(monitor="val_accuracy", mode="max", patience=spec.training.patience)
        before = len(self.history) - self.epoch
        # The sequence shuffles its windows each epoch from its own generator: Keras's batch-order shuffle (drawn
        # from Python's `random` on its prefetch thread) would leave an epoch's order unknowable in a checkpoint.
        fit = functools.partial(model.fit, validation_data=self.sequences["valid"], callbacks=[stopper, Recorder()],
                                verbose=0, shuffle=False)
        epochs = spec.training.epochs
        if within:  # the rest of the epoch a checkpoint stopped inside, then the round's other epochs
            from zoo.windows import RestOfEpoch

            fit(RestOfEpoch(train, within), epochs=self.epoch + 1, initial_epoch=self.epoch)
            Stopper.carried = _stopper_state(stopper)
            restored_shuffle = shuffle_state(train)  # the next fit's start reshuffles (EpochIterator.reset)
            if model.stop_training or self.paused:
                epochs = self.epoch
        if self.epoch < epochs:
            fit(train, epochs=epochs, initial_epoch=self.epoch)
        if self.paused:
            return None
        best = self.round_best
        return RoundResult(self.round, rate, len(self.history) - before, best["epoch"], best["logs"], best["weights"])

    def _best(self, extra: RoundResult | None = None) -> RoundResult:
        candidates = list(self.rounds) + ([extra] if extra is not None else [])
        best = None
        for result in candidates:  # the first round wins ties, as the rounds ran
            if best is None or result.best_logs.get("val_accuracy", -1) > best.best_logs.get("val_accuracy", -1):
                best = result
        assert best is not None
        return best

    def run(self) -> TrainingOutcome:
        rates = self.spec.training.learning_rates
        while self.round <= len(rates) and not self.paused:
            if not self._budget_left():  # paused at a round's start: that round's checkpoint is written
                self.paused = True
                break
            rate = rates[self.round - 1]
            result = self._fit_round(rate)
            if result is None:
                break
            self.rounds.append(result)
            best = self._best()
            if best is result:
                self.best_index, self.best_version = len(self.rounds) - 1, self.best_version + 1
            for index, r in enumerate(self.rounds):  # only the best round's weights are kept
                if index != self.best_index:
                    r.best_weights = []
            self.model.set_weights(self.rounds[self.best_index].best_weights)
            self.round, self.epoch, self.round_best = self.round + 1, 0, None
            if self.round <= len(rates):
                self.checkpoint(force=True)
        if not self.paused and self.on_rows is not None:
            self.on_rows(self.history)  # the last round's end: the trial's results follow at once
        rounds = list(self.rounds)
        partial = None
        if self.paused and self.round_best is not None and self.epoch > 0:
            partial = RoundResult(self.round, rates[self.round - 1], self.epoch, self.round_best["epoch"],
                                  self.round_best["logs"], self.round_best["weights"])
            rounds.append(partial)
        best = self._best(partial)
        self.model.set_weights(best.best_weights)
        return TrainingOutcome(rounds, best, pd.DataFrame(self.history, columns=list(HISTORY_COLUMNS)), self.paused,
                               self.resumed_from, self.resumed_batch)


def _stopper_state(stopper: Any) -> dict[str, Any]:
    """Early stopping's state in a round, as a checkpoint keeps it."""
    best = stopper.best
    return {"wait": int(stopper.wait), "stopped_epoch": int(stopper.stopped_epoch),
            "best": None if best is None else float(best), "best_epoch": int(stopper.best_epoch)}


def _state_problem(state: dict[str, Any], snapshot: Any, rates: int, epochs: int, batches: int) -> str | None:
    """What makes a checkpoint's state one that training could not have written (None: nothing); `batches`: the
    training sequence's batches per epoch."""
    rounds, round_, epoch = state["rounds"], int(state["round"]), int(state["epoch"])
    batch, seconds = int(state["batch"]), float(state["epoch_seconds"])
    if not 1 <= round_ <= rates:
        return f"round {round_} of {rates}"
    if len(rounds) != round_ - 1 or [int(r["round"]) for r in rounds] != list(range(1, round_)):
        return f"{len(rounds)} completed round(s) before round {round_}"
    if not 0 <= epoch <= epochs:
        return f"epoch {epoch} of {epochs}"
    if batch and not (0 < batch < batches and epoch < epochs and seconds >= 0 and snapshot.metrics is not None
                      and state["stopper"] is not None):
        return f"batch {batch} of {batches} in epoch {epoch + 1} of {epochs}"
    best = state["best_index"]
    if (best is None) != (not rounds) or (best is not None and (not 0 <= int(best) < len(rounds)
                                                                or snapshot.best_weights is None)):
        return f"best round index {best!r} of {len(rounds)} round(s)"
    if (epoch > 0 or batch > 0) and (state["round_best"] is None or snapshot.round_best_weights is None):
        return "a round in progress without its best weights"
    if len(state["history"]) != sum(int(r["epochs_run"]) for r in rounds) + epoch:
        return f"{len(state['history'])} history rows for the epochs run"
    return None


def train_rounds(model: Any, sequences: dict[str, Any], spec: TrialSpec,
                 on_epoch: EpochHook | None = None) -> tuple[list[RoundResult], RoundResult, pd.DataFrame]:
    """Run every learning-rate round from the best weights so far; the model ends on the best weights."""
    outcome = _Training(model, sequences, spec, on_epoch).run()
    return outcome.rounds, outcome.best, outcome.history


def compile_seconds(history: pd.DataFrame) -> float | None:
    """Tracing/compilation time, as measured from outside: the first epoch's extra time over the median of the
    first round's later epochs (None when the first round ran a single epoch)."""
    first = history[history["round"] == history["round"].min()]["seconds"].tolist()
    if len(first) < 2:
        return None
    return max(0.0, float(first[0] - np.median(first[1:])))


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
              on_model: Callable[[Any], None] | None = None, checkpoints: bool = False,
              checkpoint_seconds: float = DEFAULT_SECONDS, epoch_budget: int | None = None,
              on_rows: Callable[[list[dict[str, Any]]], None] | None = None,
              on_start_over: Callable[[str], None] | None = None, batch_size: int | None = None) -> dict[str, Any]:
    """Train `spec` on `dataset`, write the artefacts into `out`, return results.json's content.

    `on_model` receives the trained Keras model once the folder is in place (e.g. to log it elsewhere).
    With `checkpoints`, training is checkpointed into `out/checkpoint/` (runner/trial/checkpoints.py) and continues
    from there if a checkpoint is present; one that cannot be used is reported to `on_start_over(reason)` and
    training starts over. `epoch_budget` caps the epochs trained in all (successive halving): a trial stopped
    by it with training left is *paused* (results say so; its checkpoint stays in `out` to continue from).
    `on_rows(history)` receives the history whenever its epochs are durable (checkpointed, or at the end).
    `batch_size` overrides the spec's for training (a retry after running out of memory); params.json keeps the
    spec's, which its key is made from, and results say `batch_size_used`.
    """
    import keras

    from runner import backends
    from runner.trial import latency
    from runner.trial.plots import confusion_matrix, write_confusion_matrices

    model_spec = zoo.validated_spec(spec.model)
    declared = spec.model_copy(update={"model": model_spec})  # what params.json and the key say
    spec = declared.with_batch_size(batch_size)
    with atomic.atomic_dir(out, overwrite=overwrite, marker=atomic.TRIAL_MARKER) as staging:
        source, cache_hit = prepare_source(spec, dataset, cache_dir)
        sequences = _sequences(spec, dataset, source)
        backend = backends.active()
        keras.utils.set_random_seed(spec.run_seed)
        backends.deterministic(backend)
        # A full gc.collect() here costs ~0.4 s a trial; workers are recycled to bound memory instead.
        keras.backend.clear_session(free_memory=False)
        keras.mixed_precision.set_global_policy(spec.training.precision)  # every trial sets its own
        model = zoo.create_model(model_spec, dataset.num_classes)

        results: dict[str, Any] = {**declared.flat(), "batch_size_used": spec.training.batch_size,
                                   **({"seed_used": spec.run_seed} if spec.repeat else {}), **(extra_results or {})}
        results.update({f"data_total_rows_{s}": len(sequences[s].ends) for s in ("train", "valid", "test")})
        results.update(result_entries(split_baselines(dataset, {s: q.ends for s, q in sequences.items()})))
        results.update(num_classes=dataset.num_classes, classes=dataset.classes, data_root=str(dataset.root),
                       data_fingerprint=dataset.fingerprint, model_param_count=int(model.count_params()),
                       num_features=int(source.shape[-1]) if source.ndim == 2 else None,
                       cache_hit=cache_hit, **backends.describe(backend), fit_dt_train_start=_now())
        started = time.perf_counter()
        store = None
        if checkpoints:
            from runner.trial.checkpoints import FOLDER, Checkpointer, identity

            store = Checkpointer(Path(out) / FOLDER, identity(spec.flat(), dataset.fingerprint), checkpoint_seconds)
        training = _Training(model, sequences, spec, on_epoch, store, epoch_budget, on_rows)
        if store is not None and store.exists():
            from runner.trial.checkpoints import CheckpointError

            try:
                training.restore(store.read(model))
            except Exception as err:  # noqa: BLE001 - whatever fails restoring it, never a silently mixed model
                store.remove()
                sequences = _sequences(spec, dataset, source)
                keras.utils.set_random_seed(spec.run_seed)
                keras.backend.clear_session(free_memory=False)
                model = zoo.create_model(model_spec, dataset.num_classes)
                training = _Training(model, sequences, spec, on_epoch, store, epoch_budget, on_rows)
                reason = str(err) if isinstance(err, CheckpointError) else \
                    f"the checkpoint is corrupt ({type(err).__name__}: {one_line(str(err))[:200]})"
                if on_start_over is not None:
                    on_start_over(f"training starts over: {reason}")
        outcome = training.run()
        rounds, best, history = outcome.rounds, outcome.best, outcome.history
        results.update(fit_dt_train_end=_now(), fit_dt_train_duration_seconds=time.perf_counter() - started,
                       paused=outcome.paused, epoch_budget=epoch_budget, resumed_from_epoch=outcome.resumed_from,
                       resumed_from_batch=outcome.resumed_batch,
                       compile_seconds=compile_seconds(history))

        results["fit_dt_test_start"] = _now()
        started = time.perf_counter()
        probabilities, truth = _predict(model, sequences["test"], dataset)
        test_loss, test_accuracy = loss_and_accuracy(probabilities, truth)  # no second pass over the test set
        results.update(fit_dt_test_end=_now(), fit_dt_test_duration_seconds=time.perf_counter() - started)
        results.update(latency.measure(model_spec, model, cache_dir))  # end-to-end on raw frames, here

        results.update(
            fit_best_round=best.round, fit_num_epochs=int(len(history)),
            fit_train_acc=best.best_logs.get("accuracy"), fit_train_loss=best.best_logs.get("loss"),
            fit_val_acc=best.best_logs.get("val_accuracy"), fit_val_loss=best.best_logs.get("val_loss"),
            fit_test_acc=float(test_accuracy), fit_test_loss=float(test_loss),
            **{f"fit_stopped_epoch{r.round}": r.epochs_run for r in rounds},
            **{f"fit_best_epoch{r.round}": r.best_epoch for r in rounds},
        )
        ends = sequences["test"].ends
        atomic.write_json(staging / "params.json", {**declared.flat(), "data_root": str(dataset.root)})
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
        if store is not None and outcome.paused:  # kept with the paused trial's folder, to continue from
            os.replace(store.folder, staging / store.folder.name)
    if on_model is not None:
        on_model(model)
    return results
