"""What to try next: grid and Optuna samplers behind one small interface.

`prepare` runs once where a sweep starts (enqueue grid points, re-queue failures); `next_trial` runs in every
worker and atomically hands out one claimed trial or None when nothing is left. The objective and pruning
flow through the Optuna trial the claim carries, whatever chose its parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import optuna
from optuna.trial import TrialState

from runner import study as studies
from runner.expand import Expansion, expand_grid, judge
from runner.spec import TrialSpec
from runner.sweep import Range, Sweep
from zoo.errors import UserError

MAX_INVALID_DRAWS = 200


@dataclass
class Claim:
    """A trial this worker owns: the Optuna trial (RUNNING), its key and its canonical spec."""

    trial: optuna.Trial
    key: str
    spec: TrialSpec
    attempt: int = 0


class Search(Protocol):
    def prepare(self) -> int: ...

    def next_trial(self) -> Claim | None: ...

    def finish(self, claim: Claim, state: str, value: float | None) -> None: ...


def make_sampler(sweep: Sweep) -> optuna.samplers.BaseSampler:
    name, seed = sweep.search.sampler, sweep.search.seed
    if sweep.search.strategy == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    try:
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


def claim_from_queue(study: optuna.Study, rank: Any = None) -> Claim | None:
    trial = studies.claim_waiting(study, rank)
    if trial is None:
        return None
    attrs = studies.retrying(lambda: study._storage.get_trial(trial._trial_id).user_attrs,
                             f"reading trial {trial._trial_id}")  # claimed: wait, never claim another
    spec = TrialSpec.from_flat(attrs["params"])
    return Claim(trial, attrs[studies.KEY], spec, int(attrs.get("attempt", 0)))


class GridSearch:
    """Every grid point exactly once: enqueued under a lock by whoever starts first, claimed atomically."""

    def __init__(self, sweep: Sweep, study: optuna.Study, fingerprint: str, workdir: Path, max_retries: int,
                 rank: Any = None):
        self.sweep, self.study, self.fingerprint = sweep, study, fingerprint
        self.workdir, self.max_retries = workdir, max_retries
        self.rank = rank  # prefers some waiting trials over others (e.g. those whose features are cached)
        self._expansion: Expansion | None = None

    @property
    def expansion(self) -> Expansion:
        if self._expansion is None:
            self._expansion = expand_grid(self.sweep, self.fingerprint)
        return self._expansion

    def prepare(self) -> int:
        with studies.study_lock(self.study, self.workdir):
            added = studies.enqueue_missing(self.study, self.expansion.keys, self.expansion.trials)
            return added + studies.requeue_failed(self.study, self.max_retries, set(self.expansion.keys))

    def next_trial(self) -> Claim | None:
        return claim_from_queue(self.study, self.rank)

    def finish(self, claim: Claim, state: str, value: float | None) -> None:
        """Nothing to learn: the grid is fixed."""


class OptunaSearch:
    """Random or model-based sampling (TPE, QMC, CMA-ES, GP) over the sub-spaces, within a trial budget."""

    def __init__(self, sweep: Sweep, study: optuna.Study, fingerprint: str, workdir: Path, max_retries: int):
        self.sweep, self.study, self.fingerprint = sweep, study, fingerprint
        self.workdir, self.max_retries = workdir, max_retries

    def prepare(self) -> int:
        with studies.study_lock(self.study, self.workdir):
            return studies.requeue_failed(self.study, self.max_retries)

    def used_budget(self) -> int:
        counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
        keys = {t.user_attrs.get(studies.KEY) for t in self.study.get_trials(deepcopy=False, states=counted)
                if not t.user_attrs.get("invalid_reason") and t.user_attrs.get(studies.KEY)}
        return len(keys)

    def next_trial(self) -> Claim | None:
        claim = claim_from_queue(self.study)  # retries of failed trials first
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
            done = [t for t in studies.trials_by_key(self.study).get(key, []) if t.state == TrialState.COMPLETE]
            trial.set_user_attr(studies.KEY, key)
            trial.set_user_attr("params", spec.flat())
            if done:  # the sampler proposed a finished point again: answer from the study, train nothing
                trial.set_user_attr("duplicate_of", done[0].number)
                self.study.tell(trial, done[0].value)
                continue
            return Claim(trial, key, spec)
        raise UserError(f"the sampler drew {MAX_INVALID_DRAWS} invalid or repeated points in a row; "
                        "check the space and constraints with `videosweep plan`")

    def finish(self, claim: Claim, state: str, value: float | None) -> None:
        """The sampler reads finished trials from the study itself."""

    def _suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        space = self.sweep.space
        index = trial.suggest_categorical("subspace", list(range(len(space)))) if len(space) > 1 else 0
        params: dict[str, Any] = {}
        for name, values in space[index].items():
            label = f"{index}.{name}" if len(space) > 1 else name
            if isinstance(values, Range):
                params[name] = _suggest_range(trial, label, values)
            elif len(values) == 1:
                params[name] = values[0]
            else:
                choices = [_choice_label(v) for v in values]
                params[name] = values[choices.index(trial.suggest_categorical(label, choices))]
        return params


def _choice_label(value: Any) -> Any:
    """Optuna categoricals hold scalars only; lists (learning_rates) are offered by their text."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else repr(value)


def _suggest_range(trial: optuna.Trial, label: str, values: Range) -> float | int:
    if values.integer:
        step = int(values.step or 1)
        return trial.suggest_int(label, int(values.low), int(values.high), step=step, log=values.log)
    return trial.suggest_float(label, values.low, values.high, step=values.step, log=values.log)


def make_search(sweep: Sweep, study: optuna.Study, fingerprint: str, workdir: Path, max_retries: int,
                rank: Any = None) -> Search:
    if sweep.search.strategy == "grid":
        return GridSearch(sweep, study, fingerprint, workdir, max_retries, rank)
    if sweep.search.strategy in ("random", "optuna"):
        return OptunaSearch(sweep, study, fingerprint, workdir, max_retries)
    from runner.tuner import KerasTunerSearch

    return KerasTunerSearch(sweep, study, fingerprint, workdir, max_retries)
