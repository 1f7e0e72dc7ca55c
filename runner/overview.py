"""What a sweep would do and what it has done, as plain data for the CLI to show: the plan (trials per
sub-space, dropped combinations, shared feature extractions, study states) and the status of every trial."""

from __future__ import annotations

from typing import Any

from runner import queue, storage
from runner.expand import cache_sizes, expand_grid, shared_extractions
from runner.run import SweepContext

STATES = ("finished", "failed", "pending", "running")


def key_state(trials: list[Any]) -> str:
    """One trial key's state across its attempts: finished if any attempt completed, failed only if all did."""
    names = {t.state.name for t in trials}
    if "COMPLETE" in names:
        return "finished"
    if "RUNNING" in names:
        return "running"
    return "failed" if names and names <= {"FAIL"} else "pending"


def plan_report(ctx: SweepContext, verbose: bool = False) -> dict[str, Any]:
    """The sweep's plan: for a grid, every trial it expands to and every combination dropped (by reason)."""
    expansion = expand_grid(ctx.sweep, ctx.dataset.fingerprint) if ctx.sweep.search.strategy == "grid" else None
    states = dict.fromkeys(STATES, 0)
    study = ctx.open_study(create=False) if ctx.has_study() else None
    if study is not None:
        by_key = queue.trials_by_key(study)
        for key in (expansion.keys if expansion else list(by_key)):
            states[key_state(by_key.get(key, []))] += 1
    elif expansion:
        states["pending"] = len(expansion.keys)
    report: dict[str, Any] = {
        "sweep": ctx.sweep.name, "strategy": ctx.sweep.search.strategy, "storage": storage.mask_url(ctx.storage_url),
        "data": ctx.dataset.summary(), "states": states,
    }
    if expansion is None:
        report.update(trials=ctx.sweep.search.trials, per_subspace=None)
        return report
    report.update(
        trials=len(expansion.trials), per_subspace=expansion.per_subspace, combinations=expansion.combinations,
        duplicates=expansion.duplicates, dropped=dict(expansion.dropped),
        feature_extractions=dict(shared_extractions(expansion.trials)),
        cache_bytes=cache_sizes(expansion.trials, len(ctx.dataset.labels)),
    )
    if verbose:
        report["dropped_combinations"] = [{"params": p, "reason": r} for p, r in expansion.dropped_examples]
    return report


def status_rows(study: Any) -> list[dict[str, Any]]:
    """One row per valid trial of the study: number, key, architecture, state, value, seconds and a note."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        if trial.user_attrs.get("invalid_reason"):
            continue
        rows.append({
            "number": trial.number, "key": str(trial.user_attrs.get(queue.KEY_ATTR, "")),
            "architecture": str(trial.user_attrs.get("params", {}).get("architecture", "")),
            "state": trial.state.name.lower(), "value": trial.value,
            "seconds": trial.duration.total_seconds() if trial.duration else None,
            "note": trial.user_attrs.get("failure") or trial.user_attrs.get("pruned") or "",
        })
    return rows
