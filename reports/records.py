"""What reports read: a sweep's trial runs exactly as MLflow holds them, one row per trial key.

Nothing here looks at local trial folders, so reports, `best` and `export` work from any machine that can
reach the tracking store. Pure helpers (ranking) sit beside the one function that queries MLflow.
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from reports.plot_data import varied_parameters
from runner.spec.metrics import DEFAULT_COST, FINAL_METRICS, OBJECTIVES, objective
from runner.tracking.mlflow_runs import (
    BASELINE_CLASS_TAG,
    KEY_TAG,
    POINT_TAG,
    REUSED_TAG,
    ROLE,
    STATE,
    Tracker,
    typed_param,
)
from zoo.baselines import SPLIT_NAMES, from_entries
from zoo.errors import UserError
from zoo.secrets import mask_url

# Below this many finished trials the report hides parameter importances (and says why): a handful of trials,
# often near chance, ranks noise.
MIN_TRIALS_FOR_IMPORTANCE = 20
# ... and they are estimated from at most this many (a seeded sample): fANOVA's forest over 5,000 trials takes ~10 s
# and says no more than over 1,000.
IMPORTANCE_TRIALS = 1000

MODEL_PARAMS = ("architecture", "backbone", "weights", "pooling", "frame_size", "sequence_length",
                "sequence_model", "sequence_model_layers", "convolution_kernel_size", "layer_1_size",
                "layer_2_size", "layer_3_size", "dropout")


@dataclass
class SweepRuns:
    """One sweep's runs in MLflow: the parent run and a table of its trial runs."""

    tracker: Tracker
    parent: Any | None
    trials: pd.DataFrame
    sweep_file: Path | None = None  # for the `videosweep ui` hint of a local store

    @property
    def finished(self) -> pd.DataFrame:
        return self.trials[self.trials.status == "FINISHED"]

    def swept_parameters(self) -> list[str]:
        """Model parameters that took two or more non-missing values among finished trials (in MODEL_PARAMS order);
        one a single architecture alone uses, with one value, was not swept."""
        return varied_parameters(self.finished, MODEL_PARAMS)

    def run_link(self, run_id: str) -> str:
        """The run's page on the tracking server; "" for a store no server serves (see link_hint)."""
        if self.tracker is None or server_base(self.tracker.uri) is None:  # (tables built without a store: none)
            return ""
        return run_url(self.tracker.uri, self.experiment_of(run_id), run_id)

    def link_hint(self) -> str:
        """For a store with no server: the command that serves it (links would be dead); else ""."""
        if self.tracker is None or server_base(self.tracker.uri) is not None:
            return ""
        command = ui_command(self.sweep_file, self.tracker.workdir, self.tracker.experiment_name)
        return f"The runs are in a local MLflow store, which no server serves: `{command}` opens them in MLflow's UI."

    def files_run(self, run_id: str) -> str:
        """The run holding a trial run's files: a reused trial's original, else the run itself."""
        rows = self.trials[self.trials.run_id == run_id]
        return str(rows.artefacts_run_id.iloc[0]) if len(rows) else run_id

    @cached_property
    def _run_ids(self) -> frozenset[str]:
        """This sweep's trial run ids, gathered once: a link per trial must not scan every trial (5,000 trials)."""
        return frozenset(self.trials.run_id.astype(str))

    def experiment_of(self, run_id: str) -> str:
        """The experiment holding a run: this sweep's, or another sweep's for the original of a reused trial."""
        if run_id in self._run_ids:
            return str(self.tracker.experiment_id)
        try:
            return str(self.tracker.client.get_run(run_id).info.experiment_id)
        except Exception:  # noqa: BLE001 - a link is not worth failing a report over: this sweep's, then
            return str(self.tracker.experiment_id)


def server_base(tracking_uri: str) -> str | None:
    """The web address of the MLflow server a tracking URI names (password masked: links land in shared reports);
    None for a store no server serves (SQLite, a folder, a database)."""
    uri = mask_url(tracking_uri)
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else None


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """`<server>/#/experiments/<experiment>/runs/<run>` on a tracking server; "" where no server serves the store."""
    base = server_base(tracking_uri)
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}" if base else ""


def ui_command(sweep_file: Path | None, workdir: Path, sweep_name: str) -> str:
    """`videosweep ui <sweep file>`, with --workdir when it is not the default runs/<sweep name>."""
    command = f"videosweep ui {shlex.quote(str(sweep_file)) if sweep_file else '<sweep.yaml>'}"
    workdir = Path(workdir)
    return command if workdir == Path("runs") / sweep_name else f"{command} --workdir {shlex.quote(str(workdir))}"


def importance_sample(finished: pd.DataFrame, limit: int = IMPORTANCE_TRIALS) -> pd.DataFrame:
    """The finished trials importances are estimated from: all of them up to `limit`, else a seeded sample of
    `limit` (the same trials every time the report is rebuilt), in their original order."""
    if len(finished) <= limit:
        return finished
    return finished.sample(n=limit, random_state=0).sort_index()


RUN_ID = re.compile(r"[0-9a-f]{32}")  # what MLflow names runs: a tag that is not one is not followed


def artefacts_run(tags: dict[str, str], run_id: str) -> str:
    """The run holding a trial's artefacts: a reused trial's original (its copy has none), else its own.
    The tag is only ever used as a run id (never a path); what it leads to is checked against the trial key."""
    original = tags.get(REUSED_TAG, "")
    return original if RUN_ID.fullmatch(original) else run_id


def _trial_row(run: Any) -> dict[str, Any]:
    tags, info = run.data.tags, run.info
    row: dict[str, Any] = {
        "trial_key": tags.get(KEY_TAG, ""), "point_key": tags.get(POINT_TAG) or tags.get(KEY_TAG, ""), "repeat": 0,
        "run_id": info.run_id, "artefacts_run_id": artefacts_run(tags, info.run_id),
        "status": info.status,
        "state": tags.get(STATE, info.status.lower()), "reason": tags.get("failure") or tags.get("pruned") or "",
        "gpu": tags.get("gpu", ""), "host": tags.get("host", ""), "optuna_trial": typed_param(tags.get("optuna_trial")),
        "duration_seconds": (info.end_time - info.start_time) / 1000 if info.end_time and info.start_time else None,
        "rung": typed_param(tags.get("videosweep.rung")),  # successive halving: the highest rung it reached
    }
    row.update({name: typed_param(value) for name, value in run.data.params.items()})
    row.update({name: run.data.metrics.get(name, math.nan) for name in FINAL_METRICS})
    row.update({f"baseline_{split}_majority_class": tags.get(f"{BASELINE_CLASS_TAG}.{split}")
                for split in SPLIT_NAMES.values()})
    return row


def blank_unused_parameters(trials: pd.DataFrame) -> pd.DataFrame:
    """Blank what a trial's model does not use (C3D has no backbone weights; only Conv1D has a kernel size):
    the canonical spec stores defaults there, which tables would otherwise show as if they were chosen."""
    from zoo.spec import used_parameters

    trials = trials.copy()
    for (architecture, sequence_model), rows in trials.groupby(["architecture", "sequence_model"],
                                                               dropna=False).groups.items():
        try:
            uses = used_parameters(str(architecture), sequence_model)
        except KeyError:  # an architecture this zoo no longer has: show what MLflow holds
            continue
        trials.loc[rows, [name for name in MODEL_PARAMS if name not in uses]] = None
    return trials


def read_sweep_runs(tracker: Tracker) -> SweepRuns:
    """Every trial run of the sweep's experiment (and its parent run) from the tracking store."""
    runs = tracker.client.search_runs([tracker.experiment_id], filter_string=f"tags.`{ROLE}` = 'trial'",
                                      max_results=50000)
    parents = tracker.client.search_runs([tracker.experiment_id], filter_string=f"tags.`{ROLE}` = 'sweep'",
                                         max_results=1)
    columns = ["trial_key", "run_id", "artefacts_run_id", "status", "state", "reason", "rung", *MODEL_PARAMS, *FINAL_METRICS]
    trials = pd.DataFrame([_trial_row(run) for run in runs])
    trials = blank_unused_parameters(trials.reindex(columns=list(dict.fromkeys([*columns, *trials.columns]))))
    # Whole-number parameters stay whole even where a missing value (unused by an architecture) made them float.
    for name in (p for p in MODEL_PARAMS if p != "dropout"):
        numeric = pd.to_numeric(trials[name], errors="coerce")
        if numeric.notna().sum() == trials[name].notna().sum() and (numeric.dropna() % 1 == 0).all():
            trials[name] = numeric.astype("Int64")
    return SweepRuns(tracker, parents[0] if parents else None, with_margins(trials).reset_index(drop=True))


def with_margins(trials: pd.DataFrame) -> pd.DataFrame:
    """val_margin and test_margin: each trial's accuracy less its own majority-class baseline (same windows);
    missing where a trial recorded no baseline."""
    return trials.assign(
        val_margin=trials["val_accuracy_best"] - trials["baseline_val_majority_accuracy"],
        test_margin=trials["test_accuracy"] - trials["baseline_test_majority_accuracy"])


def tie_breaks(metric: str, goals: list[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    """What settles a tie on `metric`, in order: val_loss (a finer reading of the same validation split), then the
    sweep's other objectives (a single-metric sweep: latency); never a test figure, which only reports."""
    others = [goal for goal in goals or [] if goal[0] != metric] or [(DEFAULT_COST, OBJECTIVES[DEFAULT_COST].direction)]
    breaks = [("val_loss", "minimize"), *others]
    return [goal for goal in dict(breaks).items() if goal[0] != metric]


# a point's value: its repeats' mean (whole-number counts, the same for every repeat or not, are its representative's)
AVERAGED = (*(name for name in FINAL_METRICS if name not in ("best_round", "epochs", "param_count",
                                                             "deployed_param_count")),
            "val_margin", "test_margin", "duration_seconds")
SPREAD = ("val_accuracy_best", "val_loss_best", "test_accuracy")  # shown with their std over a point's repeats
POINT_COLUMNS = ("repeats", *(f"{name}_std" for name in SPREAD), "repeat_keys")


def point_rows(finished: pd.DataFrame) -> pd.DataFrame:
    """One row per point of finished trial rows (training.repeats: a point's seed repeats share a `point_key`): the
    metrics of AVERAGED are the mean over its repeats, SPREAD's have a sample std (`<name>_std`, NaN for one
    repeat), `repeats` counts them and `repeat_keys` lists their keys. The rest (trial_key, run_id, parameters,
    artefacts) is its representative's: repeat 0, else its lowest finished repeat, so `export` ships the model
    trained with training.seed itself. Without repeats every row is its own point and stays as it was."""
    points = finished.point_key.fillna(finished.trial_key) if "point_key" in finished else finished.trial_key
    points = points.where(points.astype(str) != "", finished.trial_key)
    if not points.duplicated().any():
        extra = {"repeats": 1, **{f"{name}_std": math.nan for name in SPREAD}, "repeat_keys": None}
        return finished.assign(point_key=points, **{k: v for k, v in extra.items() if k not in finished})
    repeat = pd.to_numeric(finished["repeat"], errors="coerce").fillna(0) if "repeat" in finished else 0
    ordered = finished.assign(point_key=points, _repeat=repeat).sort_values(["point_key", "_repeat", "trial_key"],
                                                                             kind="stable")
    averaged = [name for name in AVERAGED if name in ordered]
    numbers = ordered[averaged].apply(pd.to_numeric, errors="coerce").assign(point_key=ordered.point_key)
    grouped = numbers.groupby("point_key", sort=False)
    rows = ordered.groupby("point_key", sort=False).head(1).set_index("point_key").drop(columns="_repeat")
    rows[averaged] = grouped[averaged].mean()
    for name in (n for n in SPREAD if n in numbers):
        rows[f"{name}_std"] = grouped[name].std(ddof=1)
    rows["repeats"] = grouped.size()
    rows["repeat_keys"] = ordered.groupby("point_key", sort=False).trial_key.agg(" ".join).where(rows.repeats > 1)
    first = points[~points.duplicated()]  # each point where its first row came, in that order
    rows = rows.loc[first.to_numpy()].reset_index()
    rows.index = first.index
    return rows[[*finished.columns, *(name for name in POINT_COLUMNS if name not in finished)]]


def point_summary(row: pd.Series) -> dict[str, Any]:
    """A ranked point's seed repeats for JSON (`best`): how many, the spread of its figures, their keys, its point
    key; {} for a point trained once, so sweeps without repeats read as before."""
    repeats = int(row.get("repeats", 1) or 1)
    if repeats < 2:
        return {}
    spread = {f"{name.removesuffix('_best')}_std": (None if pd.isna(row[f"{name}_std"]) else float(row[f"{name}_std"]))
              for name in SPREAD}
    return {"point_key": row.point_key, "repeats": repeats, **spread, "repeat_keys": str(row.repeat_keys).split()}


def rank_trials(trials: pd.DataFrame, metric: str, goals: list[tuple[str, str]] | None = None) -> pd.DataFrame:
    """Finished points best first by `metric` (a point: one trial, or the mean of its seed repeats, `point_rows`).
    A multi-objective sweep (`goals`, more than one) puts the points on its Pareto front first within a tie, so its
    best point is always on the front; then the tie_breaks, fewer parameters, and the trial key."""
    from reports.pareto import on_front

    column = objective(metric).final
    finished = point_rows(trials[(trials.status == "FINISHED") & trials[column].notna()].copy())
    keys = []
    for index, (name, direction) in enumerate([(metric, objective(metric).direction), *tie_breaks(metric, goals)]):
        values = finished[objective(name).final].astype(float)
        # missing values sort last whichever the direction
        finished[f"_key{index}"] = (-values if direction == "maximize" else values).fillna(math.inf)
        keys.append(f"_key{index}")
    if goals and len(goals) > 1:
        finished["_off_front"] = ~on_front(finished, goals)
        keys.insert(1, "_off_front")
    finished = finished.sort_values([*keys, "param_count", "trial_key"], kind="stable")
    finished.insert(0, "rank", range(1, len(finished) + 1))
    return finished.drop(columns=keys).reset_index(drop=True)


def trial_baselines(runs: SweepRuns, run_id: str) -> dict[str, dict[str, Any]]:
    """The baselines a trial recorded over its own windows: per split, majority_accuracy, majority_class, chance."""
    rows = runs.trials[runs.trials.run_id == run_id]
    return from_entries(rows.iloc[0]) if len(rows) else {}


def baseline_text(baselines: dict[str, dict[str, Any]]) -> str:
    """One line for people: what always answering the majority class scores per split, and chance."""
    if not baselines:
        return "no baseline recorded (trials of an older videosweep)"
    shown = [f"{split}{' (held out)' if split == 'test' else ''} {b['majority_accuracy']:.4f}"
             f"{f' ({cls})' if (cls := b['majority_class']) else ''}" for split, b in baselines.items()]
    return (f"always answering the majority class scores {', '.join(shown)}; chance "
            f"{next(iter(baselines.values()))['chance']:.4f}")


def open_sweep_runs(tracking_uri: str, workdir: Path, sweep_name: str, sweep_file: Path | None = None) -> SweepRuns:
    """The sweep's runs, or a clear error when the store holds no finished trial of it yet."""
    local = tracking_uri.startswith("sqlite:///")
    if local and not Path(tracking_uri.removeprefix("sqlite:///")).is_file():
        raise UserError(f"sweep {sweep_name} has not been run yet (no MLflow store at "
                        f"{tracking_uri.removeprefix('sqlite:///')})")
    tracker = Tracker(tracking_uri, workdir, sweep_name, create=False)
    runs = read_sweep_runs(tracker)
    if runs.trials.empty:
        raise UserError(f"MLflow holds no trial of sweep {sweep_name} at {mask_url(tracking_uri)}")
    runs.sweep_file = sweep_file
    return runs
