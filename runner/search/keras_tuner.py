"""The `keras_tuner` strategy: Keras Tuner's oracles (Hyperband, Bayesian optimisation, random search) decide
what to try next; the Optuna study stays the queue and the record, like for every other strategy.

Keras Tuner keeps an oracle in one chief process. Our workers are separate processes (and machines), so the
oracle's state lives in its own files under `<workdir>/keras_tuner/` and every worker reloads it, asks or
reports, and saves it again under the study lock.

Hyperband's `tuner/epochs` becomes the study trial's epoch budget, counted like successive-halving rungs
(epochs of all learning-rate rounds together, `max_epochs` being the whole training): a trial below the
whole training pauses on its checkpoint, and the trial Hyperband promotes (`tuner/trial_id`) is the same
trial key continuing from that checkpoint, as Keras Tuner's own Hyperband tuner continues it, never retrained.
`tuner/round` is the rung it reached.
"""

from __future__ import annotations

import glob
import json
import os
import socket
import time
from contextlib import nullcontext
from itertools import count
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from runner.search import halving, subspace
from runner.search.expand import judge
from runner.spec.sweep import Range, Sweep
from runner.study import claims, liveness
from runner.study import optuna_internals as internals
from runner.study.claims import Claim, claim_for

KT_ATTR = "keras_tuner_trial"
_CLAIMS = count()
IDLE_WAIT_SECONDS = 1.0


def build_hyperparameters(sweep: Sweep) -> Any:
    """The sweep's sub-spaces as Keras Tuner hyperparameters (a `subspace` choice with conditional scopes)."""
    import keras_tuner as kt

    hp = kt.HyperParameters()
    if len(sweep.space) > 1:
        hp.Choice(subspace.SUBSPACE, list(range(len(sweep.space))))
    for index in range(len(sweep.space)):
        scope = hp.conditional_scope(subspace.SUBSPACE, [index]) if len(sweep.space) > 1 else nullcontext()
        with scope:
            for _, label, values in subspace.swept(sweep, index):
                if not isinstance(values, Range):
                    hp.Choice(label, [subspace.choice_label(v) for v in values])
                    continue
                sampling = "log" if values.log else "linear"
                if values.integer:
                    hp.Int(label, int(values.low), int(values.high), step=int(values.step or 1), sampling=sampling)
                else:
                    hp.Float(label, values.low, values.high, step=values.step, sampling=sampling)
    return hp


def params_from_values(sweep: Sweep, values: dict[str, Any]) -> dict[str, Any]:
    """A Keras Tuner trial's values -> flat sweep parameters (Hyperband's `tuner/*` values are not parameters)."""
    index = int(values.get(subspace.SUBSPACE, 0)) if len(sweep.space) > 1 else 0
    return subspace.decode(sweep, index, values)


def stage_attrs(values: dict[str, Any], whole: int) -> dict[str, Any]:
    """A Hyperband trial's epoch budget (at most the trial's whole training) and rung, as study attributes."""
    if "tuner/epochs" not in values:
        return {}
    return {halving.BUDGET_ATTR: min(int(values["tuner/epochs"]), whole),
            claims.RUNG_ATTR: int(values.get("tuner/round", 0))}


class KerasTunerSearch:
    """Keras Tuner oracle behind the same `prepare` / `next_trial` / `finish` interface."""

    def __init__(self, sweep: Sweep, study: optuna.Study, fingerprint: str, workdir: Path, max_retries: int):
        self.sweep, self.study, self.fingerprint = sweep, study, fingerprint
        self.workdir, self.max_retries = workdir, max_retries
        self.directory = workdir / "keras_tuner"

    # -------------------------------------------------------------- the shared oracle

    def _new_oracle(self) -> Any:
        import keras_tuner as kt

        search = self.sweep.search
        objective = kt.Objective(search.metric, "max" if search.direction == "maximize" else "min")
        common = {"objective": objective, "hyperparameters": build_hyperparameters(self.sweep), "seed": search.seed,
                  "tune_new_entries": False, "allow_new_entries": False, "max_retries_per_trial": 0}
        if search.oracle == "hyperband":
            oracle = kt.oracles.HyperbandOracle(max_epochs=halving.full_epochs(self.sweep.training), factor=3,
                                                **common)
            oracle.max_trials = search.trials
        elif search.oracle == "bayesian":
            oracle = kt.oracles.BayesianOptimizationOracle(max_trials=search.trials, **common)
        else:
            oracle = kt.oracles.RandomSearchOracle(max_trials=search.trials, **common)
        oracle._set_project_dir(str(self.directory), self.sweep.name)
        oracle.verbose = 0
        return oracle

    def _load(self) -> Any:
        """The oracle as its files say (unlike `Oracle.reload`, ongoing trials stay ongoing: other workers)."""
        from keras_tuner.src.engine import stateful
        from keras_tuner.src.engine import trial as trial_module

        oracle = self._new_oracle()
        project = Path(oracle._project_dir)
        for fname in glob.glob(str(project / "trial_*" / "trial.json")):
            loaded = trial_module.Trial.load(fname)
            oracle.trials[loaded.trial_id] = loaded
        if (project / "oracle.json").is_file():
            stateful.Stateful.reload(oracle, str(project / "oracle.json"))
        return oracle

    # -------------------------------------------------------------- the Search interface

    def prepare(self) -> int:
        with claims.study_lock(self.study, self.workdir):
            requeued = claims.requeue_failed(self.study, self.max_retries)
            self._end_given_up_trials()
            return requeued

    def next_trial(self) -> Claim | None:
        while True:
            # a retry, or a trial another worker asked for
            claim = claim_for(self.sweep, self.study, self.fingerprint)
            if claim is not None:
                return claim
            with claims.study_lock(self.study, self.workdir):
                oracle = self._load()
                tuner_id = f"{socket.gethostname()}-{os.getpid()}-{next(_CLAIMS)}"
                kt_trial = oracle.create_trial(tuner_id)
                status = kt_trial.status
                if status == "RUNNING":
                    params = params_from_values(self.sweep, kt_trial.hyperparameters.values)
                    spec, reason = judge(self.sweep, params, "")
                    if spec is None:  # the zoo cannot build it: tell the oracle, draw again
                        kt_trial.status, kt_trial.message = "FAILED", f"invalid: {reason}"
                        oracle.end_trial(kt_trial)
                        continue
                    key = spec.key(self.fingerprint)
                    earlier = claims.trials_by_key(self.study).get(key)
                    promoted = "tuner/trial_id" in kt_trial.hyperparameters.values
                    if earlier and not promoted:  # a point drawn twice
                        kt_trial.status, kt_trial.message = "FAILED", f"drawn before as trial key {key}"
                        oracle.end_trial(kt_trial)
                        continue
                    stage = stage_attrs(kt_trial.hyperparameters.values, halving.full_epochs(spec.training))
                    if earlier and promoted:  # where its checkpoint is (a worker elsewhere starts over, saying so)
                        last = max(earlier, key=lambda t: t.number)
                        stage.update(promoted_from=last.number, checkpoint=last.user_attrs.get("checkpoint"))
                    claims.enqueue(self.study, key, spec, **{KT_ATTR: kt_trial.trial_id}, **stage)
            if status == "STOPPED":
                with claims.study_lock(self.study, self.workdir):
                    halving.remove_stopped_checkpoints(self.study, self.workdir)
                return None
            if status == "IDLE":  # Hyperband waits for a bracket's running trials
                if not self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
                    return None
                with claims.study_lock(self.study, self.workdir):
                    liveness.fail_dead_trials(self.study)
                time.sleep(IDLE_WAIT_SECONDS)

    def finish(self, claim: Claim, state: str, value: float | None) -> None:
        """Report a finished trial to the oracle (complete -> its metric; pruned/failed -> FAILED after retries)."""
        kt_id = internals.storage(self.study).get_trial(internals.trial_id(claim.trial)).user_attrs.get(KT_ATTR)
        if kt_id is None:
            return
        if state == "failed" and claim.attempt < self.max_retries:
            return  # a retry will report it
        with claims.study_lock(self.study, self.workdir):
            oracle = self._load()
            kt_trial = oracle.trials.get(kt_id)
            if kt_trial is None or kt_trial.status != "RUNNING":
                return
            if state == "complete" and value is not None:
                oracle.update_trial(kt_id, {self.sweep.search.metric: value})
                kt_trial.status = "COMPLETED"
            else:
                kt_trial.status, kt_trial.message = "FAILED", state
            oracle.end_trial(kt_trial)

    def _end_given_up_trials(self) -> None:
        """Oracle trials whose study trials all failed past the retries (e.g. their worker died) end FAILED."""
        by_key = claims.trials_by_key(self.study)
        oracle = None
        for trials in by_key.values():
            kt_id = trials[-1].user_attrs.get(KT_ATTR)
            states = {t.state for t in trials}
            if kt_id is None or states - {TrialState.FAIL}:
                continue
            oracle = oracle or self._load()
            kt_trial = oracle.trials.get(kt_id)
            if kt_trial is not None and kt_trial.status == "RUNNING":
                kt_trial.status, kt_trial.message = "FAILED", json.dumps(trials[-1].user_attrs.get("failure"))
                oracle.end_trial(kt_trial)
