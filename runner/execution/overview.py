"""What a sweep would do and what it has done, as plain data for the CLI to show: the plan (trials per
sub-space, dropped combinations, shared feature extractions, study states) and the status of every trial."""

from __future__ import annotations

from typing import Any

from runner.execution.context import SweepContext
from runner.search import halving
from runner.search.expand import cache_sizes, expand_grid, shared_extractions
from runner.spec.baselines import baselines_json
from runner.study import claims, storage
from zoo.errors import UserError

STATES = ("finished", "failed", "pending", "running")
# `status` lists at most this many trials (without --all): rich measures every cell of a table, and 5,000 rows are
# neither quick nor readable; the totals line still counts every trial.
STATUS_ROWS = 200
# Optuna's state names in the one vocabulary of plan, status, run's summary, the report and the MLflow state tag.
STATE_WORDS = {"complete": "finished", "fail": "failed", "waiting": "pending"}


def state_word(optuna_state: str) -> str:
    """`complete` -> `finished`, `fail` -> `failed`, `waiting` -> `pending`; running, pruned and the rest as is."""
    return STATE_WORDS.get(optuna_state, optuna_state)


def key_state(trials: list[Any]) -> str:
    """One trial key's state across its attempts: finished if any attempt completed, failed only if all did;
    with successive halving, as its highest rung says (paused: stopped at a rung, may be promoted)."""
    trials = claims.current_trials(trials) if trials else trials
    names = {t.state.name for t in trials}
    if "COMPLETE" in names:
        done = [t for t in trials if t.state.name == "COMPLETE"]
        return "paused" if all(t.user_attrs.get("paused") for t in done) else "finished"
    if "RUNNING" in names:
        return "running"
    return "failed" if names and names <= {"FAIL"} else "pending"


def plan_report(ctx: SweepContext, verbose: bool = False) -> dict[str, Any]:
    """The sweep's plan: for a grid, every trial it expands to and every combination dropped (by reason)."""
    expansion = expand_grid(ctx.sweep, ctx.dataset.fingerprint) if ctx.sweep.search.strategy == "grid" else None
    states = dict.fromkeys(STATES + (("paused",) if ctx.sweep.search.stages_epochs else ()), 0)
    study = ctx.open_study(create=False) if ctx.has_study() else None
    if study is not None:
        by_key = claims.trials_by_key(study)
        for key in (expansion.keys if expansion else list(by_key)):
            states[key_state(by_key.get(key, []))] += 1
    elif expansion:
        states["pending"] = len(expansion.keys)
    report: dict[str, Any] = {
        "sweep": ctx.sweep.name, "strategy": ctx.sweep.search.strategy, "storage": storage.mask_url(ctx.storage_url),
        "data": ctx.dataset.summary(), "states": states, "weights": weights_to_fetch(ctx.sweep),
        "baselines": baselines_json(ctx.sweep, ctx.dataset),
    }
    schedule_ = ctx.sweep.search.schedule
    if schedule_ is not None:
        report["schedule"] = schedule_.model_dump()
    if expansion is None:
        report.update(trials=ctx.sweep.search.trials, per_subspace=None)
        maxima = [halving.full_epochs(ctx.sweep.training)] * int(ctx.sweep.search.trials or 0)
        report["epoch_budget"] = halving.planned_epochs(schedule_, maxima)
        report.update(_estimate(ctx, None, study, max(0, (ctx.sweep.search.trials or 0) - states["finished"])))
        return report
    report["epoch_budget"] = halving.planned_epochs(
        schedule_, [halving.full_epochs(spec.training) for spec in expansion.trials])
    report.update(
        trials=len(expansion.trials), points=len(set(expansion.point_keys)), repeats=ctx.sweep.training.repeats,
        per_subspace=expansion.per_subspace, combinations=expansion.combinations,
        duplicates=expansion.duplicates, dropped=dict(expansion.dropped),
        feature_extractions=dict(shared_extractions(expansion.trials)),
        cache_bytes=cache_sizes(expansion.trials, len(ctx.dataset.labels)),
    )
    if verbose:
        report["dropped_combinations"] = [{"params": p, "reason": r} for p, r in expansion.dropped_examples]
    report.update(_estimate(ctx, expansion, study, 0))
    return report


def weights_to_fetch(sweep: Any) -> list[dict[str, Any]]:
    """The ImageNet weights files the sweep loads that are not cached yet, with their size as the server states
    it (None offline or when it does not say): what `run` will fetch before its workers start."""
    from runner.search.expand import imagenet_weights_needed
    from zoo.weights import remote_size

    return [{"backbone": file.backbone, "file": file.name, "url": storage.mask_url(file.url), "bytes": remote_size(file)}
            for file in imagenet_weights_needed(sweep) if not file.path().is_file()]


def _sample_specs(sweep: Any, count: int) -> list[Any]:
    """Stand-ins for the trials a sampler will draw: each sub-space's first choices (ranges: their low end)."""
    from runner.search import subspace
    from runner.search.expand import judge
    from runner.spec.sweep import Range

    specs = []
    for index in range(len(sweep.space)):
        chosen = {label: (values.low if isinstance(values, Range) else subspace.choice_label(values[0]))
                  for _, label, values in subspace.swept(sweep, index)}
        try:
            spec, _ = judge(sweep, subspace.decode(sweep, index, chosen), "")
        except Exception:  # noqa: BLE001 - a stand-in only
            spec = None
        if spec is not None:
            specs.append(spec)
    return [specs[i % len(specs)] for i in range(count)] if specs else []


def _estimate(ctx: SweepContext, expansion: Any, study: Any, remaining: int) -> dict[str, Any]:
    """How many pending trials will be reused from other sweeps, and how long the rest will take."""
    from runner.execution import estimate
    from runner.execution.scheduler import plan_slots
    from runner.search import reuse, stop
    from runner.spec.metrics import objective
    from runner.tracking import mlflow_runs

    stop.watched(ctx.sweep)
    finished: set[str] = set()
    if study is not None:
        finished = {key for key, trials in claims.trials_by_key(study).items() if key_state(trials) == "finished"}
    final = objective(ctx.sweep.search.metric).final
    resources = ctx.sweep.resources
    slots = len(plan_slots(resources.gpus, resources.trials_per_gpu, resources.workers))
    pending = [(key, spec) for key, spec in zip(expansion.keys, expansion.trials) if key not in finished] \
        if expansion is not None else [(None, spec) for spec in _sample_specs(ctx.sweep, remaining)]
    try:
        reuse.warm_start_runs(ctx.tracking_uri, list(ctx.sweep.search.warm_start), final)
        reusable, capped = reuse.reusable_keys(ctx.tracking_uri, ctx.sweep.name, [k for k, _ in pending if k], final)
        to_train = [spec for key, spec in pending if key not in reusable]
        mlflow = mlflow_runs.client(ctx.tracking_uri) if reuse.store_exists(ctx.tracking_uri) else None
        guess = estimate.estimate(to_train, slots, mlflow)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - a plan still shows, with the reason its estimate is rough
        reusable, capped, to_train = {}, [], [spec for _, spec in pending]
        guess = estimate.estimate(to_train, slots, None)
        guess["basis"] = f"{estimate.ROUGH_MODEL} (the tracking store could not be read: {type(err).__name__})"
    return {"reused": len(reusable), "to_train": len(to_train), "estimate_seconds": round(guess["seconds"], 1),
            "estimate_basis": guess["basis"], "slots": slots, "reuse_notes": capped}


def status_rows(study: Any) -> list[dict[str, Any]]:
    """One row per valid trial of the study: number, key, architecture, state, value, seconds and a note."""
    rows = []
    top_rung: dict[str, int] = {}
    for key, trials in claims.trials_by_key(study).items():
        top_rung[key] = max(int(t.user_attrs.get(claims.RUNG_ATTR, 0)) for t in trials)
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        if attrs.get("invalid_reason"):
            continue
        problem = claims.malformed(attrs)  # anyone can write the study: such a trial is named, never counted on
        key = str(attrs.get(claims.KEY_ATTR, ""))
        rows.append({
            "number": trial.number, "key": key[:40],
            "architecture": "" if problem else str(attrs.get("params", {}).get("architecture", "")),
            "state": trial.state.name.lower(), "value": trial.values[0] if trial.values else None,
            "seconds": trial.duration.total_seconds() if trial.duration else None,
            "note": f"malformed, ignored: {problem}" if problem else
            str(attrs.get("failure") or attrs.get("pruned") or attrs.get("started_over") or ""),
            "rung": None if problem else attrs.get(claims.RUNG_ATTR), "paused": bool(attrs.get("paused")),
            "promoted": not problem and int(attrs.get(claims.RUNG_ATTR, 0)) < top_rung.get(key, 0),
            "epochs": None if problem else attrs.get("epochs_trained"),
        })
    return rows


def shown_rows(rows: list[dict[str, Any]], limit: int | None = STATUS_ROWS) -> tuple[list[dict[str, Any]], int]:
    """The status rows worth listing and how many are left out: all of them up to `limit` (None: no limit);
    beyond it, the trials not yet settled as finished first (running, pending, failed), then the latest, in
    trial order."""
    if limit is None or len(rows) <= limit:
        return rows, 0
    unsettled = [i for i, row in enumerate(rows) if row["state"] != "complete"]
    finished = [i for i, row in enumerate(rows) if row["state"] == "complete"]
    kept = unsettled[-limit:]
    kept += finished[len(finished) - (limit - len(kept)):] if limit > len(kept) else []
    return [rows[i] for i in sorted(kept)], len(rows) - len(kept)
