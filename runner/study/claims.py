"""The study as a work queue: trials keyed by `trial_key`, enqueued once under a sweep-wide lock, claimed
atomically, re-queued after failures, and counted.

Optuna's GridSampler and `enqueue_trial` duplicate points across processes, so grid points are enqueued once
per key under the lock; a WAITING trial is claimed by one conditional UPDATE, so two workers never take it.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from filelock import FileLock
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from runner import memory
from runner.spec.trial_spec import TrialSpec, is_trial_key, unlisted_files
from runner.study import optuna_internals as internals
from runner.study.liveness import fail_trial, not_the_trials_fault
from runner.study.storage import LockLost, fenced, retrying, unreachable
from zoo.errors import UserError, one_line

KEY_ATTR = "trial_key"  # the Optuna user attribute naming a trial's key (its MLflow tag is tracking.KEY_TAG)
REFUSED_ATTR = "refused"  # a trial failed unrun because its key or parameters cannot be trusted
POINT_ATTR = "point_key"  # the point a seed repeat belongs to (training.repeats > 1; its MLflow tag: POINT_TAG)
RUNG_ATTR = "rung"  # the successive-halving rung a study trial trains to (absent/0 without a schedule)
LOCK_WAIT_SECONDS = 120


@dataclass
class Claim:
    """A trial this worker owns: the Optuna trial (RUNNING), its key and its canonical spec."""

    trial: optuna.Trial
    key: str
    spec: TrialSpec
    attempt: int = 0
    attrs: dict[str, Any] = field(default_factory=dict)  # its user attributes when claimed (rung, budget, ...)
    point_key: str = ""  # the point it repeats (training.repeats): the key of its repeat 0; "" for its own key

    @property
    def point(self) -> str:
        return self.point_key or self.key

    @property
    def grouped(self) -> bool:
        """Whether it is one of several seed repeats of a point (its run then carries the point's key)."""
        return bool(self.spec.repeat or self.attrs.get(POINT_ATTR))

    @property
    def epoch_budget(self) -> int | None:
        budget = self.attrs.get("epoch_budget")
        return int(budget) if budget is not None else None

    @property
    def batch_size(self) -> int | None:
        """The smaller batch a retry after running out of memory trains with (None: the spec's)."""
        size = self.attrs.get(memory.BATCH_ATTR)
        return int(size) if size is not None and size < self.spec.training.batch_size else None


def _advisory_key(study: optuna.Study) -> int:
    digest = hashlib.sha256(f"videosweep:{study.study_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextmanager
def study_lock(study: optuna.Study, workdir: Path) -> Iterator[None]:
    """Serialise queue maintenance (enqueue, re-queue, the parent run) between every process of the sweep.

    On PostgreSQL this is a session advisory lock in the study's own database, so it holds across machines and
    is released by the server if its holder dies. Other storages use a file lock in the workdir (one machine).
    """
    engine = getattr(internals.rdb_backend(study), "engine", None)
    if engine is not None and engine.url.get_backend_name() == "postgresql":
        from sqlalchemy import text

        key = _advisory_key(study)
        connection = retrying(lambda: _advisory_lock(engine, key), "taking the study lock")
        try:
            with fenced(lambda: _still_held(connection)):  # a session lock goes with its connection
                yield
        finally:
            try:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                connection.commit()
            except Exception as err:  # noqa: BLE001 - filtered by unreachable
                if not unreachable(err):
                    raise  # (a dropped session took its lock with it: the server released it)
            finally:
                connection.close()
        return
    workdir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(workdir / ".study.lock"), timeout=LOCK_WAIT_SECONDS):
        yield


def _still_held(connection: Any) -> None:
    """LockLost unless the connection holding the advisory lock is still there (and with it the lock): a database
    restart mid-upkeep would otherwise let a second process in while this one goes on writing."""
    from sqlalchemy import text

    try:
        connection.execute(text("SELECT 1"))
    except Exception as err:  # noqa: BLE001 - filtered by unreachable
        if unreachable(err):
            raise LockLost("the study lock went with its database connection") from None
        raise


def _advisory_lock(engine: Any, key: int) -> Any:
    """A connection holding the PostgreSQL session advisory lock `key` (waits for it)."""
    from sqlalchemy import text

    connection = engine.connect()
    try:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
        connection.commit()
    except BaseException:
        connection.close()
        raise
    return connection


def malformed(attrs: dict[str, Any]) -> str | None:
    """Why a study trial's attributes are not ones videosweep writes (anyone can write the study), or None: the
    numbers it counts with are whole numbers, its parameters a mapping."""
    for name in (RUNG_ATTR, "attempt", "epoch_budget", memory.BATCH_ATTR):
        value = attrs.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            return f"{name} {str(value)[:40]!r} is not a whole number"
    if attrs.get(memory.BATCH_ATTR) == 0:
        return "batch_size 0 is not a batch"
    if not isinstance(attrs.get("params", {}), dict):
        return "its params are not a mapping"
    return None


def trials_by_key(study: optuna.Study) -> dict[str, list[FrozenTrial]]:
    """A study's trials by key; planted, refused and malformed trials stand for no key."""
    grouped: dict[str, list[FrozenTrial]] = defaultdict(list)
    for trial in study.get_trials(deepcopy=False):
        key = trial.user_attrs.get(KEY_ATTR)
        if is_trial_key(key) and not trial.user_attrs.get(REFUSED_ATTR) and malformed(trial.user_attrs) is None:
            grouped[key].append(trial)
    return grouped


def optuna_params(spec: TrialSpec) -> dict[str, Any]:
    """A spec's flat parameters as Optuna stores parameters (lists as JSON text)."""
    return {name: json.dumps(value) if isinstance(value, list) else value for name, value in spec.used_flat().items()}


def grid_distributions(specs: list[TrialSpec]) -> dict[str, CategoricalDistribution]:
    """One categorical distribution per parameter over every value the grid gives it, the same in every process
    (Optuna refuses a parameter whose choices differ between the trials of a study)."""
    values: dict[str, set[Any]] = defaultdict(set)
    for spec in specs:
        for name, value in optuna_params(spec).items():
            values[name].add(value)
    return {name: CategoricalDistribution(sorted(found, key=lambda v: (type(v).__name__, str(v))))
            for name, found in values.items()}


def add_waiting(study: optuna.Study, user_attrs: dict[str, Any], params: dict[str, Any],
                 distributions: dict[str, BaseDistribution]) -> None:
    """A WAITING trial that also carries its parameters as Optuna parameters (dashboards, trials_dataframe)."""
    if params:
        try:
            study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, params=params,
                                                      distributions=distributions, user_attrs=user_attrs))
            return
        except ValueError:  # the study recorded other choices for a parameter (the grid was edited): the user
            pass  # attribute still carries the parameters; only the dashboards' columns go without them
    study.enqueue_trial(params={}, user_attrs=user_attrs)


def enqueue(study: optuna.Study, key: str, spec: TrialSpec, attempt: int = 0,
            distributions: dict[str, CategoricalDistribution] | None = None, **attrs: Any) -> None:
    user_attrs = {KEY_ATTR: key, "params": spec.flat(), "attempt": attempt, **attrs}
    params = optuna_params(spec) if distributions else {}
    add_waiting(study, user_attrs, params, {name: (distributions or {})[name] for name in params})


def current_trials(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """A key's trials at its highest successive-halving rung (without a schedule: all of them)."""
    top = max(int(t.user_attrs.get(RUNG_ATTR, 0)) for t in trials)
    return [t for t in trials if int(t.user_attrs.get(RUNG_ATTR, 0)) == top]


def next_attempt(trials: list[FrozenTrial], max_retries: int) -> dict[str, Any] | None:
    """The user attributes of the next attempt of a key whose current attempts all failed; None when it is
    failed for good. An interrupted attempt does not use up a retry; one that ran out of memory is retried only
    with a smaller batch (`resources.on_oom`), which uses up no retry either: it is not the same way twice."""
    failed = [t for t in trials if t.state == TrialState.FAIL]
    if not failed or len(failed) < len(trials):
        return None
    last = max(failed, key=lambda t: t.number)
    attrs = {k: v for k, v in last.user_attrs.items() if k not in memory.OOM_ATTRS}
    if memory.is_oom(last.user_attrs):
        batch = memory.next_batch(last.user_attrs)
        return None if batch is None else {**attrs, memory.BATCH_ATTR: batch}
    failures = sum(not not_the_trials_fault(t.user_attrs.get("failure")) and memory.next_batch(t.user_attrs) is None
                   for t in failed)
    return {**attrs, "attempt": failures} if failures <= max_retries else None


def requeue_failed(study: optuna.Study, max_retries: int, wanted: set[str] | None = None) -> int:
    """Enqueue again every key whose last attempt failed and that has a next attempt. Call under the lock."""
    count = 0
    for key, trials in trials_by_key(study).items():
        if wanted is not None and key not in wanted:
            continue
        trials = current_trials(trials)  # a promoted key's earlier rungs are history
        attrs = next_attempt(trials, max_retries)
        if attrs is not None and is_trial_key(key):
            last = max(trials, key=lambda t: t.number)
            add_waiting(study, attrs, last.params, last.distributions)
            count += 1
    return count


def enqueue_missing(study: optuna.Study, keys: list[str], specs: list[TrialSpec],
                    attrs: Callable[[TrialSpec], dict[str, Any]] | None = None,
                    point_keys: list[str] | None = None) -> int:
    """Enqueue grid points that have no trial yet (never twice, whoever calls first). Call under the lock.
    `point_keys` (seed repeats): each trial's point, recorded where the sweep repeats points."""
    known = trials_by_key(study)
    points = point_keys if point_keys and len(set(point_keys)) < len(point_keys) else [None] * len(keys)
    missing = [(key, spec, point) for key, spec, point in zip(keys, specs, points) if key not in known]
    distributions = grid_distributions(specs)
    for key, spec, point in missing:
        grouping = {POINT_ATTR: point} if point else {}
        enqueue(study, key, spec, distributions=distributions, **grouping, **(attrs(spec) if attrs else {}))
    return len(missing)


def _take(study: optuna.Study, claimed_id: int) -> bool:
    """The atomic claim; if the connection drops around its commit, the start time we wrote says whether it
    went through."""
    started = internals.claim_start_time()
    try:
        return internals.take_waiting(study, claimed_id, started)
    except Exception as err:  # noqa: BLE001 - filtered by unreachable
        if not unreachable(err):
            raise
    return retrying(lambda: internals.claimed_by(study, claimed_id, started),
                    f"checking the claim of trial {claimed_id}")


def claim_waiting(study: optuna.Study, rank: Callable[[FrozenTrial], int] | None = None) -> optuna.Trial | None:
    """Atomically take a WAITING trial, preferring the lowest `rank` and then the lowest number; None when the
    queue is empty.

    Once taken, the trial is ours: a storage hiccup after that is waited out, never answered by claiming
    another trial (which would leave this one RUNNING with nobody on it).
    """
    storage = internals.storage(study)
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    for trial in sorted(waiting, key=lambda t: ((rank(t) if rank else 0), t.number)):
        claimed_id = internals.trial_id(trial)
        if not _take(study, claimed_id):
            continue  # another worker took it first
        storage.record_heartbeat(claimed_id)
        return internals.trial_handle(study, claimed_id)
    return None


def claim_from_queue(study: optuna.Study, rank: Callable[[FrozenTrial], int] | None = None,
                     fingerprint: str | None = None, files: Collection[tuple[str, str]] | None = None) -> Claim | None:
    """The next queued trial as a Claim (its key, spec and attempt read back once it is ours).

    Anyone who can write the shared study can enqueue a trial, and its key names folders: a trial whose key is
    not exactly the one its own parameters make (on `fingerprint`'s data), or whose parameters load a file
    that is not among `files` (the sweep file's, `Sweep.named_files`), is failed with the reason, unrun.
    """
    while (trial := claim_waiting(study, rank)) is not None:
        claimed_id = internals.trial_id(trial)
        attrs = internals.storage(study).get_trial(claimed_id).user_attrs  # claimed: a lost connection is waited
        # out by the storage, never answered by claiming another
        try:
            claim = _checked_claim(trial, attrs, fingerprint, files)
            _refuse_a_twin(study, claim)
            return claim
        except UserError as err:
            reason = str(err)
        _refuse(study, claimed_id, reason)
    return None


def claim_for(sweep: Any, study: optuna.Study, fingerprint: str, rank: Callable[[FrozenTrial], int] | None = None
              ) -> Claim | None:
    """The next queued trial `sweep` may run: its key checked against its parameters on this data, and the files
    it would load against those the sweep file names (`Sweep.named_files`)."""
    return claim_from_queue(study, rank, fingerprint, sweep.named_files())


def _checked_claim(trial: optuna.Trial, attrs: dict[str, Any], fingerprint: str | None,
                   files: Collection[tuple[str, str]] | None = None) -> Claim:
    """The claim, or a UserError saying why the trial's key or parameters cannot be trusted."""
    key = attrs.get(KEY_ATTR)
    if not is_trial_key(key):
        raise UserError(f"refused: {str(key)[:40]!r} is not a trial key (12 hex digits)")
    problem = malformed(attrs)
    if problem is not None:
        raise UserError(f"refused: trial {key}'s {problem}")
    try:
        spec = TrialSpec.from_flat(dict(attrs["params"]))
        attempt = int(attrs.get("attempt", 0))
    except (UserError, KeyError, TypeError, ValueError) as err:
        raise UserError(f"refused: trial {key} has unusable parameters ({one_line(str(err))[:200]})") from None
    if fingerprint is not None and spec.key(fingerprint) != key:
        raise UserError(f"refused: {key} is not the trial key of the trial's parameters")
    unlisted = unlisted_files(spec, files) if files is not None else []
    if unlisted:  # anyone can compute a key: a path in it is trusted only if the user's sweep file names it
        raise UserError(f"refused: trial {key} would load {unlisted[0][:200]}, a file the sweep file does not name")
    return Claim(trial, key, spec, attempt, dict(attrs), point_of(spec, key, attrs, fingerprint))


def point_of(spec: TrialSpec, key: str, attrs: dict[str, Any], fingerprint: str | None) -> str:
    """The point key of a claimed trial: its own for repeat 0, else its repeat 0's (made from its parameters on
    `fingerprint`'s data; without them, the recorded attribute if it has a key's form)."""
    if not spec.repeat:
        return key
    if fingerprint is not None:
        return spec.point().key(fingerprint)
    recorded = attrs.get(POINT_ATTR)
    return recorded if is_trial_key(recorded) else key


def point_of_trial(trial: FrozenTrial) -> str | None:
    """The point a study trial belongs to: its recorded point key, else its own key (None if it has none)."""
    point = trial.user_attrs.get(POINT_ATTR)
    return point if is_trial_key(point) else trial.user_attrs.get(KEY_ATTR)


_STANDING = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)


def _refuse_a_twin(study: optuna.Study, claim: Claim) -> None:
    """A UserError if an earlier trial already stands for the claim's key at its rung (waiting, running or done).

    Queue upkeep runs under the study lock, but a PostgreSQL advisory lock goes with its connection: a database
    restart mid-upkeep lets a second process in. Its holder checks the lock before each write (`study_lock`), but
    a restart between that check and the write can still leave two processes enqueueing the same point or
    promotion. Whoever claims the later twin refuses it, so each key trains once per rung however twins arose.
    """
    rung = claim.attrs.get(RUNG_ATTR) or 0  # a whole number: `_checked_claim` refused malformed attributes
    for other in study.get_trials(deepcopy=False, states=_STANDING):
        attrs = other.user_attrs
        if (other.number < claim.trial.number and attrs.get(KEY_ATTR) == claim.key and malformed(attrs) is None
                and (attrs.get(RUNG_ATTR) or 0) == rung and not attrs.get(REFUSED_ATTR)):
            raise UserError(f"refused: trial #{other.number} already stands for {claim.key} at rung {rung}")


def _refuse(study: optuna.Study, claimed_id: int, reason: str) -> None:
    """Fail a claimed trial that must not run, for good: it is never re-queued."""
    internals.storage(study).set_trial_user_attr(claimed_id, REFUSED_ATTR, True)
    fail_trial(study, claimed_id, reason)


def state_counts(study: optuna.Study) -> dict[str, int]:
    """Trials by state (and `invalid`)."""
    counts = {state.name.lower(): 0 for state in TrialState}
    for trial in study.get_trials(deepcopy=False):
        if trial.user_attrs.get("invalid_reason"):
            counts["invalid"] = counts.get("invalid", 0) + 1
            continue
        counts[trial.state.name.lower()] += 1
    return counts
