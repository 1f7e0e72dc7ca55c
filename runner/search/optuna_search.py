"""Random and model-based sampling (Optuna's samplers and pruners) over the sweep's sub-spaces; ASHA."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from runner.search import halving, subspace
from runner.search.expand import judge
from runner.spec.sweep import Range, Sweep
from runner.spec.trial_spec import TrialSpec
from runner.study import claims
from runner.study.claims import Claim, claim_for
from zoo.errors import UserError

MAX_INVALID_DRAWS = 200


def make_sampler(sweep: Sweep) -> optuna.samplers.BaseSampler:
    name, seed = sweep.search.sampler, sweep.search.seed
    if sweep.search.strategy == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    try:
        if name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed)
        if name == "tpe":
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if name == "qmc":
            return optuna.samplers.QMCSampler(seed=seed)
        # Optuna imports these samplers' packages lazily, at the first model-based draw inside a worker, whose
        # crash then left its trial RUNNING and the worker respawning forever: import them here, up front.
        if name == "cmaes":
            import cmaes  # noqa: F401

            return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
        import scipy  # noqa: F401
        import torch  # noqa: F401

        return optuna.samplers.GPSampler(seed=seed)
    except ImportError as err:
        raise UserError(f"search.sampler {name} needs an extra package: {err}") from None


def make_pruner(sweep: Sweep) -> optuna.pruners.BasePruner:
    return {
        "none": optuna.pruners.NopPruner,
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=sweep.training.epochs),
        "successive_halving": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=1),
    }[sweep.search.pruner]()


class OptunaSearch:
    """Random or model-based sampling (TPE, QMC, CMA-ES, GP) over the sub-spaces, within a trial budget."""

    def __init__(self, sweep: Sweep, study: optuna.Study, fingerprint: str, workdir: Path, max_retries: int):
        self.sweep, self.study, self.fingerprint = sweep, study, fingerprint
        self.workdir, self.max_retries = workdir, max_retries

    def prepare(self) -> int:
        with claims.study_lock(self.study, self.workdir):
            return claims.requeue_failed(self.study, self.max_retries) + self._promote()

    def _promote(self) -> int:
        """ASHA: paused trials in the top of their rung so far go on (call under the lock)."""
        if self.sweep.search.schedule is None:
            return 0
        return halving.promote(self.study, self.sweep.search.schedule, self.sweep.search.direction,
                                synchronous=False)

    def next_trial(self) -> Claim | None:
        claim = claim_for(self.sweep, self.study, self.fingerprint)  # retries of failed trials first
        if claim is not None:
            return claim
        if self.sweep.search.schedule is not None:
            with claims.study_lock(self.study, self.workdir):
                promoted = self._promote()
            if promoted:
                claim = claim_for(self.sweep, self.study, self.fingerprint)
                if claim is not None:
                    return claim
        for _ in range(MAX_INVALID_DRAWS):
            if self.used_budget() >= (self.sweep.search.trials or 0):
                return None
            trial = self.study.ask()
            params = self._suggest(trial)
            spec, reason = judge(self.sweep, params, "")
            if spec is None:
                trial.set_user_attr("invalid_reason", reason)
                self.study.tell(trial, state=TrialState.PRUNED)
                continue
            key = spec.key(self.fingerprint)
            done = [t for t in claims.trials_by_key(self.study).get(key, []) if t.state == TrialState.COMPLETE]
            trial.set_user_attr(claims.KEY_ATTR, key)
            trial.set_user_attr("params", spec.flat())
            first = halving.first_budget(self.sweep, spec.flat())
            if done:  # the sampler proposed a finished point again: answer from the study, train nothing
                trial.set_user_attr("duplicate_of", done[0].number)
                self.study.tell(trial, done[0].values)
                continue
            for name, value in first.items():
                trial.set_user_attr(name, value)
            self._queue_repeats(trial, spec, key, first)
            return Claim(trial, key, spec, attrs=first)
        raise UserError(f"the sampler drew {MAX_INVALID_DRAWS} invalid or repeated points in a row; "
                        "check the space and constraints with `videosweep plan`")

    def _queue_repeats(self, trial: optuna.Trial, spec: TrialSpec, key: str, first: dict[str, Any]) -> None:
        """training.repeats: the point's other seed repeats, queued as trials of their own with the sampled trial's
        Optuna parameters (the sampler sees each repeat as an observation of the point; reports, halving and stop
        rules use the point's mean). Never twice: a repeat whose key the study holds is not queued again."""
        repeats = self.sweep.training.repeats
        if repeats <= 1:
            return
        trial.set_user_attr(claims.POINT_ATTR, key)
        with claims.study_lock(self.study, self.workdir):
            known = claims.trials_by_key(self.study)
            for repeat in range(1, repeats):
                copy = spec.with_repeat(repeat)
                copy_key = copy.key(self.fingerprint)
                if copy_key in known:
                    continue
                claims.add_waiting(self.study, {claims.KEY_ATTR: copy_key, "params": copy.flat(), "attempt": 0,
                                                claims.POINT_ATTR: key, **first}, trial.params, trial.distributions)

    def used_budget(self) -> int:
        """Points sampled so far (a point's seed repeats count once)."""
        counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
        points = {claims.point_of_trial(t) for t in self.study.get_trials(deepcopy=False, states=counted)
                  if not t.user_attrs.get("invalid_reason") and t.user_attrs.get(claims.KEY_ATTR)}
        return len(points)

    def finish(self, claim: Claim, state: str, value: float | None) -> None:
        """The sampler reads finished trials from the study itself."""

    def _suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        space = self.sweep.space
        index = trial.suggest_categorical(subspace.SUBSPACE, list(range(len(space)))) if len(space) > 1 else 0
        chosen: dict[str, Any] = {}
        for _, label, values in subspace.swept(self.sweep, index):
            chosen[label] = _suggest_range(trial, label, values) if isinstance(values, Range) else \
                trial.suggest_categorical(label, [subspace.choice_label(v) for v in values])
        return subspace.decode(self.sweep, index, chosen)


def _suggest_range(trial: optuna.Trial, label: str, values: Range) -> float | int:
    if values.integer:
        step = int(values.step or 1)
        return trial.suggest_int(label, int(values.low), int(values.high), step=step, log=values.log)
    return trial.suggest_float(label, values.low, values.high, step=values.step, log=values.log)
