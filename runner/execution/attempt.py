"""One attempt at a claimed trial, in pieces with one job each: the events it sends (`Announcer`), what the
shared study holds of it (`StudyRecord`), its MLflow child run (`RunLog`), and `Attempt`, which trains it (or
answers it from an earlier sweep's run) and tells all three how it ended.

The heartbeat covers the whole attempt, not only training: creating the MLflow run and logging the model can
take longer than the grace period on a loaded tracking server, and a silent trial is re-queued.
"""

from __future__ import annotations

import json
import os
import socket
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner import fault_injection, memory, preemption
from runner.execution.events import EpochEnded, Event, TrialFinished, TrialNote, TrialStarted
from runner.spec.metrics import STUDY_RESULTS, objective
from runner.study import liveness
from runner.study import optuna_internals as internals
from runner.study.claims import Claim
from runner.study.liveness import Heartbeat
from runner.study.storage import retrying
from runner.workdir import trial_folder
from zoo.errors import one_line
from zoo.secrets import mask_text

if TYPE_CHECKING:
    from runner.execution.worker import WorkerConfig

Outcome = tuple[str, float | None]  # 'complete', 'pruned', 'preempted' or 'failed', and the objective's value


def emit(config: WorkerConfig, event: Event) -> None:
    """An event to the scheduler's display; a scheduler that is gone is not an error (the study has it all)."""
    if config.events is not None:
        try:
            config.events.send(event)
        except (BrokenPipeError, OSError):
            config.events = None


def run_claim(claim: Claim, config: WorkerConfig, sweep: Any, dataset: Any, tracker: Any = None) -> Outcome:
    """Train one claimed trial and tell the study how it ended."""
    with Heartbeat(claim.trial.study, internals.trial_id(claim.trial)) as heartbeat:
        return Attempt(claim, config, sweep, dataset, tracker, heartbeat).run()


class Announcer:
    """The attempt's events to the scheduler (progress display, notes)."""

    def __init__(self, config: WorkerConfig, claim: Claim) -> None:
        self.config, self.claim = config, claim

    def _send(self, event_type: type, **fields: Any) -> None:
        emit(self.config, event_type(self.config.slot, trial=self.claim.trial.number, **fields))

    def started(self) -> None:
        self._send(TrialStarted, key=self.claim.key, architecture=self.claim.spec.model.architecture)

    def epoch(self, step: int, val_accuracy: float) -> None:
        self._send(EpochEnded, step=step, val_accuracy=val_accuracy)

    def note(self, text: str) -> None:
        self._send(TrialNote, key=self.claim.key, text=text)

    def finished(self, state: str, value: float | None = None, reason: str = "") -> Outcome:
        self._send(TrialFinished, key=self.claim.key, state=state, value=value, reason=reason)
        return state, value


class StudyRecord:
    """What the shared study holds of the attempt: its attributes and, last, its outcome."""

    def __init__(self, claim: Claim) -> None:
        self.trial, self.study = claim.trial, claim.trial.study

    def set(self, **attrs: Any) -> None:
        """Trial attributes (the storage writes each again if the database drops the connection)."""
        for name, value in attrs.items():
            self.trial.set_user_attr(name, value)

    def tell(self, **outcome: Any) -> None:
        # skip_if_finished: had this worker been declared dead meanwhile, its trial is already FAIL and
        # re-queued; the copy then reuses results.json on this machine instead of crashing this worker
        self.study.tell(self.trial, skip_if_finished=True, **outcome)

    def started(self, config: WorkerConfig, attempt: int) -> None:
        self.set(slot=config.slot, gpu=config.gpu or "cpu", host=socket.gethostname(), pid=os.getpid(),
                 attempt=attempt, cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES", ""))


class RunLog:
    """The trial's MLflow child run, written only through the Tracker; without tracking, nothing is written."""

    def __init__(self, tracker: Any, parent_id: str | None, claim: Claim) -> None:
        self.tracker, self.parent_id = tracker, parent_id
        self.key, self.spec_flat = claim.key, claim.spec.used_flat()
        self.run_id: str | None = None
        self.logged = -1  # the last epoch step MLflow holds for this run
        self.model_logged = False  # the key's run already finished with its model (resume after a lost study)

    def open(self, tags: dict[str, Any]) -> dict[str, Any] | None:
        """Start (or find again) the key's run; the results if the key finished and was logged before the study
        lost its record: it is never logged again."""
        self.logged = -1
        if self.tracker is None:
            return None
        finished = self.tracker.finished_trial(self.key)
        if finished is not None:
            self.run_id, results = finished
            self.model_logged = True
            return results
        self.run_id = self.tracker.trial_run(self.parent_id, self.key, self.spec_flat, tags)
        self.logged = self.tracker.last_step(self.run_id)
        return None

    def fresh(self, tags: Callable[[], dict[str, Any]]) -> bool:
        """A fresh run instead of one that holds epochs already (they would mix with the new ones)."""
        if self.tracker is None or self.logged < 0:
            return False
        self.run_id = self.tracker.restart_trial_run(self.run_id, self.parent_id, self.key, self.spec_flat, tags())
        self.logged = -1
        return True

    def started_over(self, reason: str) -> None:
        if self.tracker is not None and self.run_id is not None:
            self.tracker.mark_started_over(self.run_id, reason)

    def continued(self, step: int) -> None:
        if self.tracker is not None:
            self.tracker.mark_continued(self.run_id, step)

    def epochs(self, history: list[dict[str, Any]]) -> None:
        """Epochs now durable (checkpointed), each logged once."""
        new = [row for row in history if int(row["step"]) > self.logged]
        if self.tracker is not None and new:
            self.tracker.log_epochs(self.run_id, new)
        if new:
            self.logged = int(new[-1]["step"])

    def finish(self, results: dict[str, Any], out: Path, model: Any, paused: bool) -> None:
        if self.tracker is None or self.model_logged:
            return
        if paused:  # its model is logged when it finishes (a paused trial's folder keeps its checkpoint)
            model = None
        elif model is None:
            import keras

            model = keras.models.load_model(out / "model_best.keras", safe_mode=True)
        self.tracker.finish_trial(self.run_id, results, out, model, state="paused" if paused else "finished")

    def pruned(self, reason: str) -> None:
        if self.tracker is not None:
            self.tracker.prune_trial(self.run_id, reason)

    def preempted(self, reason: str) -> None:
        if self.tracker is not None and self.run_id is not None:
            self.tracker.preempt_trial(self.run_id, reason)

    def failed(self, reason: str, traceback_path: Path, kind: str | None) -> str:
        """Record a failure; what to add to the reason if the tracking store (maybe what failed) refused it."""
        if self.tracker is None or self.run_id is None:
            return ""
        try:
            self.tracker.fail_trial(self.run_id, reason, traceback_path, kind=kind)
        except Exception as tracking_err:  # noqa: BLE001 - the tracking store may be what failed: say so
            return mask_text(one_line(f"; MLflow did not record this failure: {type(tracking_err).__name__}: "
                                      f"{tracking_err}"))[:300]
        return ""


class Attempt:
    """One claimed trial, from its start to the study's record of how it ended."""

    def __init__(self, claim: Claim, config: WorkerConfig, sweep: Any, dataset: Any, tracker: Any,
                 heartbeat: Heartbeat | None = None) -> None:
        self.claim, self.config, self.sweep, self.dataset, self.tracker = claim, config, sweep, dataset, tracker
        self.heartbeat = heartbeat
        self.trial = claim.trial
        self.events, self.record = Announcer(config, claim), StudyRecord(claim)
        self.run_log = RunLog(tracker, config.parent_run_id, claim)
        self.objective = objective(sweep.search.metric)  # the first objective: progress, stop rules, pruner
        self.objectives = [objective(name) for name, _ in sweep.search.goals()]
        self.out = trial_folder(Path(config.workdir), claim.key)
        self.started_over = ""
        self.epochs_seen = False  # this attempt has trained an epoch (the first one says if it continued)

    def run(self) -> Outcome:
        import optuna

        fault_injection.after_claim(self.claim.spec)
        self.record.started(self.config, self.claim.attempt)
        self.events.started()
        try:
            reused = self._reuse()
            if reused is not None:
                return reused
            return self._complete(*self._train())
        except optuna.TrialPruned as pruned:
            return self._pruned(str(pruned))
        except preemption.Preempted as preempted:
            return self._preempted(str(preempted))
        except Exception as err:  # the trial failed; the sweep goes on
            return self._failed(err)

    def _check_heartbeat(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.check()

    def _values(self, value_of: Any) -> Any:
        """The study's value: one number, or one per objective (Optuna's front)."""
        values = [value_of(o) for o in self.objectives]
        return values[0] if len(values) == 1 else values

    def _reuse(self) -> Outcome | None:
        """A key that finished in another sweep of the tracking store: its run copied, nothing trained."""
        from runner.search import reuse
        from runner.tracking import provenance

        if not self.config.reuse or self.tracker is None:
            return None
        client = self.tracker.client
        source, capped = retrying(lambda: reuse.find_source(client, self.sweep.name, self.claim.key,
                                                            [o.final for o in self.objectives]),
                                  f"looking for an earlier run of trial {self.claim.key}")
        for phrase in capped:
            self.events.note(f"reuse: {phrase}")
        if source is None:
            return None
        if not reuse.artifacts_present(client, source):
            self.events.note(f"is trained again: the artefacts of its earlier run {source.info.run_id} are gone "
                             f"({source.info.artifact_uri})")
            return None
        tags = {"optuna_trial": self.trial.number, "slot": self.config.slot, **self._point_tags(),
                **provenance.trial_tags(self.config.sweep_source, self.config.backend)}
        self.run_log.run_id = reuse.copy_run(self.tracker, self.config.parent_run_id, self.claim.key,
                                             self.claim.spec.used_flat(), source, tags)
        self.record.set(mlflow_run_id=self.run_log.run_id, **{reuse.REUSED_ATTR: source.info.run_id},
                        **reuse.study_attrs(source))
        self.record.tell(values=self._values(lambda o: float(source.data.metrics[o.final])))
        value = float(source.data.metrics[self.objective.final])
        return self.events.finished("complete", value, reason=f"reused run {source.info.run_id}")

    def _tags(self) -> dict[str, Any]:
        """The trial run's tags: where it runs (slot, host, backend, code version) and its rung."""
        from runner import backends
        from runner.tracking.provenance import trial_tags

        config, claim = self.config, self.claim
        tags = {"optuna_trial": self.trial.number, "slot": config.slot, "gpu": config.gpu or "cpu",
                "host": socket.gethostname(), "retry": claim.attempt, "backend": config.backend,
                "backend_version": backends.version(config.backend) or "unknown",
                **trial_tags(config.sweep_source, config.backend)}
        tags.update(self._point_tags())
        if claim.epoch_budget is not None:
            tags.update({"videosweep.rung": claim.attrs.get("rung", 0), "epoch_budget": claim.epoch_budget})
        if claim.batch_size is not None:  # the key's parameters say the sweep file's batch; this one trained
            tags["videosweep.batch_size_used"] = (f"{claim.batch_size} (the sweep's {claim.spec.training.batch_size} "
                                                  "ran out of memory)")
        return tags

    def _point_tags(self) -> dict[str, Any]:
        """The point key and repeat index that group a point's seed repeats (none without training.repeats)."""
        from runner.tracking.mlflow_runs import POINT_TAG, REPEAT_TAG

        claim = self.claim
        return {POINT_TAG: claim.point, REPEAT_TAG: claim.spec.repeat} if claim.grouped else {}

    def _finished_results(self) -> dict[str, Any] | None:
        """results.json of this claim's budget, if the trial finished it before a crash but was never told."""
        path = self.out / "results.json"
        if not path.is_file():
            return None
        results = json.loads(path.read_text())
        return results if results.get("epoch_budget") == self.claim.epoch_budget else None

    def _on_epoch(self, step: int, row: dict[str, Any]) -> None:
        import optuna

        self.events.epoch(step, row["val_accuracy"])
        if not self.epochs_seen and step > 0:  # this attempt continued a checkpoint
            self.run_log.continued(step)
        self.epochs_seen = True
        self._check_heartbeat()
        if len(self.objectives) > 1:  # Optuna neither records nor prunes per-step values of several objectives
            return
        self.trial.report(float(row[self.objective.per_epoch]), step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {step + 1}")

    def _on_rows(self, history: list[dict[str, Any]]) -> None:
        """Epochs now durable (checkpointed): to MLflow once each, and the checkpoint's place to the study."""
        self.run_log.epochs(history)
        if history:
            self.record.set(checkpoint={"host": socket.gethostname(), "epochs": len(history)})

    def _fresh_run(self, reason: str) -> None:
        from runner.tracking.mlflow_runs import STARTED_OVER_TAG

        if self.run_log.fresh(lambda: {**self._tags(), STARTED_OVER_TAG: reason}):
            self.record.set(mlflow_run_id=self.run_log.run_id)

    def _start_over(self, reason: str) -> None:
        """Training starts from epoch 0 although an earlier attempt had checkpointed: the study, MLflow (a fresh
        run: the old one's epochs would be mixed with the new ones) and the sweep's output say why."""
        self.started_over = reason
        self.record.set(started_over=reason)
        self.events.note(f"starts over: {reason}")
        self._fresh_run(reason)
        self.run_log.started_over(reason)

    def _train(self) -> tuple[dict[str, Any], Any]:
        """The trial's results and its trained model (None when results.json was already there)."""
        from runner.trial.checkpoints import FOLDER, LATEST
        from runner.trial.training import run_trial

        config, claim = self.config, self.claim
        self.started_over = ""
        logged = self.run_log.open(self._tags())
        if self.run_log.run_id is not None:
            self.record.set(mlflow_run_id=self.run_log.run_id)
        if logged is not None:  # trained and logged before the study lost its record: never log it again
            return logged, None
        finished = self._finished_results()
        if finished is not None:  # finished before a crash, but never told: do not retrain
            return finished, None
        fault_injection.before_trial(claim.spec.with_batch_size(claim.batch_size))
        earlier = claim.attrs.get("checkpoint")
        if not (self.out / FOLDER / LATEST).is_file():
            if isinstance(earlier, dict):  # re-queued onto a machine without the earlier attempt's checkpoint
                self._start_over(f"the checkpoint of {earlier.get('epochs')} epoch(s) on host "
                                 f"{earlier.get('host')} is not on {socket.gethostname()}")
            else:
                self._fresh_run("no checkpoint")
        trained: list[Any] = []
        results = run_trial(claim.spec, self.dataset, self.out, cache_dir=config.cache_dir, on_epoch=self._on_epoch,
                            overwrite=True, extra_results={"trial_key": claim.key, "optuna_trial": self.trial.number,
                                                           "rung": claim.attrs.get("rung"),
                                                           "started_over": self.started_over or None},
                            on_model=trained.append, checkpoints=True,
                            checkpoint_seconds=self.sweep.training.checkpoint_seconds,
                            epoch_budget=claim.epoch_budget, on_rows=self._on_rows, on_start_over=self._start_over,
                            batch_size=claim.batch_size)
        return results, trained[0] if trained else None

    def _complete(self, results: dict[str, Any], model: Any) -> Outcome:
        paused = bool(results.get("paused"))
        self.record.set(**{name: results.get(name) for name in STUDY_RESULTS}, paused=paused,
                        epochs_trained=results.get("fit_num_epochs"))
        self.run_log.finish(results, self.out, model, paused)
        self._check_heartbeat()
        self.record.tell(values=self._values(lambda o: o.value(results)))
        return self.events.finished("complete", self.objective.value(results))

    def _pruned(self, reason: str) -> Outcome:
        import optuna

        from runner.workdir import remove_checkpoint

        self.record.set(pruned=reason)
        remove_checkpoint(self.out)  # a pruned trial never continues; its folder goes too if nothing else is in it
        try:
            self.out.rmdir()
        except OSError:
            pass
        self.run_log.pruned(reason)
        self.record.tell(state=optuna.trial.TrialState.PRUNED)
        return self.events.finished("pruned")

    def _preempted(self, where: str) -> Outcome:
        """Stopped for a preemption: not the trial's fault (no retry used); it continues from its checkpoint."""
        import optuna

        self.run_log.preempted(f"{liveness.PREEMPTED}; {where}")
        self.record.set(failure=liveness.PREEMPTED, preempted_at=where)
        self.record.tell(state=optuna.trial.TrialState.FAIL)
        return self.events.finished("preempted", reason=liveness.PREEMPTED)

    def _failed(self, err: Exception) -> Outcome:
        import optuna

        from zoo import atomic

        reason = mask_text(one_line(f"{type(err).__name__}: {err}"))[:500]
        oom: dict[str, Any] = {}
        if memory.is_out_of_memory(err):  # never retried the same way: failed, or retried with half the batch
            batch = self.claim.batch_size or self.claim.spec.training.batch_size
            oom = memory.oom_attrs(batch, self.config.on_oom, memory.peak_rss_mb())
            reason = f"out of memory at batch size {batch} (peak {oom[memory.PEAK_ATTR]:g} MB): {reason}"[:500]
        path = Path(self.config.workdir) / "failures" / f"{self.claim.key}-trial{self.trial.number}.txt"
        atomic.write_text(path, traceback.format_exc())
        reason += self.run_log.failed(reason, path, oom.get(memory.KIND_ATTR))
        self.record.set(failure=reason, traceback_path=str(path), **oom)
        self.record.tell(state=optuna.trial.TrialState.FAIL)
        return self.events.finished("failed", reason=reason)
