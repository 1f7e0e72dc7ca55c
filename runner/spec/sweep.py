"""The sweep file: a pydantic schema for `sweeps/*.yaml`, with one-line errors naming file, key path and choices.

A sweep names its data, how every trial trains, how to search (grid | random | optuna | keras_tuner) and a
list of sub-spaces, each expanded on its own as the research grid was per architecture. Values in a sub-space
are lists (tried in turn) or ranges `{low, high, log, step}` (sampled by random/optuna/keras_tuner only).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from runner.spec.constraints import Constraint, ConstraintError, parse_constraint
from runner.spec.metrics import HELD_OUT, OBJECTIVES, held_out
from runner.spec.trial_spec import (
    CHECKPOINT_SECONDS,
    MAX_REPEATS,
    PARAMETER_ALIASES,
    PARAMETERS,
    TrainingConfig,
    canonical_parameter,
    read_yaml_mapping,
    validation_message,
)
from zoo.errors import UserError, did_you_mean
from zoo.secrets import MASK, mask_text, mask_webhook
from zoo.spec import FILE_PARAMETERS, canonical_value

Strategy = Literal["grid", "random", "optuna", "keras_tuner"]
MAX_GRID = 100_000  # grid points judged one by one: beyond this a grid takes hours, a sampler is the tool
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class Range(BaseModel):
    """A numeric range for sampling strategies: integers if low/high/step are integers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    low: float = Field(description="Smallest value.")
    high: float = Field(description="Largest value.")
    log: bool = Field(False, description="Sample on a log scale.")
    step: float | None = Field(None, gt=0, description="Quantisation step.")
    integer: bool = Field(False, description="Set automatically when low and high are integers.")

    @model_validator(mode="before")
    @classmethod
    def _detect_integer(cls, data: Any) -> Any:
        if isinstance(data, dict) and "integer" not in data:
            values = [data.get("low"), data.get("high"), data.get("step", 1)]
            data = {**data, "integer": all(isinstance(v, int) and not isinstance(v, bool) for v in values)}
        return data

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.low > self.high:
            raise ValueError("low must not exceed high")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("a range is either log-scaled or stepped, not both")
        return self


SpaceValue = list[Any] | Range


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    root: Path = Field(description="Dataset folder: <video>/<frame files> plus labels.csv.")
    labels: Path | None = Field(None, description="labels.csv path if not inside root.")


class StopConfig(BaseModel):
    """When to stop handing out new trials (running ones finish); checked after every finished trial."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: float | None = Field(None, description="Stop once a finished trial reaches this value of the metric.")
    patience_trials: int | None = Field(
        None, ge=1, description="Stop once this many finished trials in a row bring no improvement.")
    metric: str | None = Field(None, description="Metric the rules watch (default: search.metric); one the study "
                                                 "records: val_accuracy or val_loss.")

    @field_validator("metric")
    @classmethod
    def _not_held_out(cls, value: str | None) -> str | None:
        if value in HELD_OUT:
            raise ValueError(held_out(value))
        return value


Direction = Literal["maximize", "minimize"]


def recorded_metric(value: str) -> str:
    """A metric name every trial records (objectives, search.metric), or the error listing them."""
    if value in HELD_OUT:
        raise ValueError(held_out(value))
    if value not in OBJECTIVES:
        raise ValueError(f"{value!r} is not a metric trials record; choose one of {', '.join(OBJECTIVES)}")
    return value


class ObjectiveConfig(BaseModel):
    """One objective of a multi-objective search."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str = Field(description=f"A metric every trial records: {', '.join(OBJECTIVES)}.")
    direction: Direction = Field(description="maximize | minimize")

    @field_validator("metric")
    @classmethod
    def _recorded(cls, value: str) -> str:
        return recorded_metric(value)


class ScheduleConfig(BaseModel):
    """Successive halving: every trial trains to the first rung, the best 1/reduction_factor go on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["successive_halving", "asha"] = Field(
        description="successive_halving (grid: a rung completes before promotion) | asha (random/optuna: "
                    "asynchronous promotion)")
    min_epochs: int = Field(1, ge=1, description="Epochs of the first rung (at most training.epochs).")
    reduction_factor: int = Field(3, ge=2, description="Each rung keeps the best 1/reduction_factor and "
                                                       "multiplies the epochs by it.")


class SearchConfig(BaseModel):
    """What to try next."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: Strategy = Field("grid", description="grid | random | optuna | keras_tuner")
    metric: str = Field("val_accuracy", description="Objective reported to the search (the best round's value); "
                        "with `objectives`, the first one's metric.")
    direction: Direction = Field("maximize", description="Whether higher metric is better.")
    objectives: list[ObjectiveConfig] = Field(
        default_factory=list, description="Several objectives, e.g. [{metric: val_accuracy, direction: maximize}, "
        "{metric: latency_ms, direction: minimize}]: Optuna searches their Pareto front (sampler nsga2 or tpe); "
        "grid and random sweeps record them all and reports compute the front.")
    trials: int | None = Field(None, ge=1, description="Budget of trained trials for random/optuna/keras_tuner.")
    sampler: Literal["tpe", "nsga2", "random", "cmaes", "gp", "qmc"] = Field("tpe", description="Optuna sampler.")
    pruner: Literal["none", "median", "hyperband", "successive_halving"] = Field(
        "none", description="Stops bad trials early from their per-epoch validation metric.")
    oracle: Literal["hyperband", "bayesian", "random"] = Field("hyperband", description="Keras Tuner oracle.")
    timeout: float | None = Field(None, gt=0, description="Stop handing out new trials after this many seconds.")
    seed: int = Field(0, ge=0, description="Seeds the sampler.")
    stop: StopConfig = Field(default_factory=StopConfig, description="Stop rules: target value, patience in trials.")
    warm_start: list[str] = Field(default_factory=list, description="optuna/random: other sweeps (same tracking "
                                  "store) whose finished trials inform the sampler from the start.")
    schedule: ScheduleConfig | None = Field(
        None, description="Successive halving over epochs (rungs count epochs of all learning-rate rounds "
                          "together; the last rung is the whole training).")

    @model_validator(mode="before")
    @classmethod
    def _primary_from_objectives(cls, data: Any) -> Any:
        """With `objectives`, `metric`/`direction` default to the first objective's (progress, stop rules, best)."""
        if isinstance(data, dict) and isinstance(data.get("objectives"), list) and data["objectives"]:
            first = data["objectives"][0]
            if isinstance(first, dict) and first.get("metric") in OBJECTIVES and \
                    first.get("direction") in ("maximize", "minimize"):  # else the objective's own error says why
                data = {"metric": first.get("metric"), "direction": first.get("direction"), **data}
        return data

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        return recorded_metric(value)

    @model_validator(mode="after")
    def _objectives_fit(self) -> SearchConfig:
        goals = self.objectives
        if not goals:
            return self
        names = [g.metric for g in goals]
        if len(set(names)) != len(names):
            raise ValueError("objectives: each metric may appear once")
        if (self.metric, self.direction) != (goals[0].metric, goals[0].direction):
            raise ValueError("metric/direction: with objectives, they are the first objective's (leave them out)")
        if len(goals) > 1:
            if self.strategy == "keras_tuner":
                raise ValueError("objectives: keras_tuner optimises one metric; use optuna (sampler nsga2 or tpe), "
                                 "random or grid")
            if self.strategy == "optuna" and self.sampler == "cmaes":
                raise ValueError("objectives: the cmaes sampler optimises one metric; use nsga2 or tpe")
            if self.pruner != "none":
                raise ValueError("pruner: Optuna cannot prune a multi-objective search; use pruner none")
            if self.warm_start:
                raise ValueError("warm_start: not available with several objectives")
        elif self.sampler == "nsga2" and self.strategy == "optuna":
            raise ValueError("sampler: nsga2 is for several objectives")
        return self

    @property
    def stages_epochs(self) -> bool:
        """Trials train in stages of epochs, pausing on a checkpoint between them (a schedule, or Keras Tuner's
        Hyperband): status and plans show rungs and paused trials."""
        return self.schedule is not None or (self.strategy == "keras_tuner" and self.oracle == "hyperband")

    def goals(self) -> list[tuple[str, str]]:
        """(metric, direction) of every objective; one pair for a single-metric sweep."""
        return [(g.metric, g.direction) for g in self.objectives] or [(self.metric, self.direction)]

    def study_direction(self) -> str | list[str]:
        """What Optuna's study is created with: one direction, or a list for several objectives."""
        goals = self.goals()
        return goals[0][1] if len(goals) == 1 else [direction for _, direction in goals]


class ResourcesConfig(BaseModel):
    """Where trials run (the command line wins)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpus: str = Field("auto", pattern=r"^(auto|none|\s*\d+\s*(,\s*\d+\s*)*)$",
                      description="auto | none | comma-separated GPU indices.")
    trials_per_gpu: int = Field(1, ge=1, description="Concurrent trials per GPU.")
    workers: int | None = Field(None, ge=1, description="CPU slots when no GPU is used.")
    max_retries: int = Field(1, ge=0, description="Retries of a failed trial.")
    trial_timeout: float | None = Field(None, gt=0, description="Seconds before a running trial is killed.")
    trials_per_process: int = Field(
        50, ge=1, description="A worker process is recycled after this many trials (a new one costs ~6 s).")
    memory_limit_mb: float | None = Field(
        None, gt=0, description="A worker whose resident memory passes this is recycled between trials.")
    preempt_grace_seconds: float = Field(
        60.0, gt=0, description="After a SIGTERM (preemption), seconds workers have to stop at a batch and record "
                                "their trials before they are killed; the sweep then exits 143.")
    on_oom: Literal["fail", "retry_smaller_batch"] = Field(
        "fail", description="A trial that runs out of memory fails (never retried the same way), or is retried with "
                            "half its batch size, again while it runs out of memory and the batch is over 1.")
    backend: str | None = Field(
        None, description="Keras backend: tensorflow | jax | torch (default: $KERAS_BACKEND, else tensorflow).")

    @field_validator("backend")
    @classmethod
    def _backend(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from runner import backends

        name = value.strip().lower()
        reason = backends.problem(name)
        if reason is not None:
            raise ValueError(reason)
        return name


NotifyEvent = Literal["end", "failure", "stalled"]


class NotifyConfig(BaseModel):
    """Where to send a JSON summary (Slack/Mattermost-compatible `text`) and on which events."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = Field(None, description="HTTP(S) URL receiving a POST of JSON; none: no notifications.")
    on: tuple[NotifyEvent, ...] = Field(("end", "failure"), description="end | failure (a trial failed for "
                                        "good) | stalled (a worker stopped responding).")

    @model_validator(mode="before")
    @classmethod
    def _on_read_as_true(cls, value: Any) -> Any:
        """YAML 1.1 reads an unquoted `on:` key as the boolean true: the only field it can mean here is `on`."""
        if isinstance(value, dict) and True in value and "on" not in value:
            return {("on" if key is True else key): item for key, item in value.items()}
        return value


class SweepTraining(TrainingConfig):
    """The sweep's training settings: a trial's (part of its key) plus how often it is checkpointed (not)."""

    checkpoint_seconds: float = Field(
        CHECKPOINT_SECONDS, ge=0,
        description="A trial is checkpointed at most this often: after an epoch, or inside a long epoch at a batch "
                    "(0: after every epoch only); always at every round's end and at a preemption (not part of the "
                    "trial key).")
    repeats: int = Field(
        1, ge=1, le=MAX_REPEATS,
        description="Trainings of each point, with seeds derived from `seed` (the first uses `seed` itself); a "
                    "point's value is their mean. Each repeat is a trial of its own (key, checkpoint, MLflow run).")


class TrackingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    uri: str | None = Field(None, description="MLflow tracking URI; default sqlite:///<workdir>/mlflow.db.")
    log_diff: bool = Field(False, description="Log the uncommitted diff of the sweep file's git repository "
                           "(source and config files only, masked) as git/uncommitted.diff; --log-diff does too. "
                           "Off: only the commit and whether the tree is dirty are recorded.")


def _canonical_keys(index: int, sub: dict[str, SpaceValue]) -> dict[str, SpaceValue]:
    """A sub-space keyed by canonical parameter names (research spellings such as pretrained_model_name map)."""
    renamed: dict[str, SpaceValue] = {}
    for key, values in sub.items():
        name = canonical_parameter(key)
        if name in renamed:
            raise ValueError(f"sub-space {index}: {key} and {name} name the same parameter")
        renamed[name] = values
    return renamed


class Sweep(BaseModel):
    """One sweep definition."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Sweep name: the Optuna study and MLflow experiment name.")
    data: DataConfig
    training: SweepTraining = Field(default_factory=SweepTraining)
    search: SearchConfig = Field(default_factory=SearchConfig)
    space: list[dict[str, SpaceValue]] = Field(min_length=1, description="Sub-spaces, each expanded on its own.")
    constraints: list[str] = Field(default_factory=list, description="Rules every trial must satisfy.")
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    notify: NotifyConfig = Field(default_factory=NotifyConfig)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError("use letters, digits, '.', '_' and '-' only (no path separators or spaces)")
        return value

    @field_validator("space", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        if isinstance(value, dict):
            value = [value]
        if isinstance(value, list):
            value = [
                {k: (v if isinstance(v, (list, dict)) else [v]) for k, v in sub.items()} if isinstance(sub, dict)
                else sub for sub in value
            ]
        return value

    @field_validator("space")
    @classmethod
    def _keys(cls, value: list[dict[str, SpaceValue]]) -> list[dict[str, SpaceValue]]:
        for index, sub in enumerate(value):
            if not sub:
                raise ValueError(f"sub-space {index} is empty")
            if "architecture" not in sub:
                raise ValueError(f"sub-space {index} has no architecture")
            for key, values in sub.items():
                if canonical_parameter(key) not in PARAMETERS:
                    raise ValueError(f"sub-space {index}: unknown parameter {key!r}; valid: {', '.join(PARAMETERS)}"
                                     + did_you_mean(key, [*PARAMETERS, *PARAMETER_ALIASES]))
                if isinstance(values, list) and not values:
                    raise ValueError(f"sub-space {index}: {key} has no values")
        return [_canonical_keys(index, sub) for index, sub in enumerate(value)]

    @model_validator(mode="after")
    def _strategy_fits(self) -> Sweep:
        ranges = [(i, k) for i, sub in enumerate(self.space) for k, v in sub.items() if isinstance(v, Range)]
        if self.search.strategy == "grid" and ranges:
            index, key = ranges[0]
            raise ValueError(f"space.{index}.{key}: a range cannot be used by the grid strategy; list the values "
                             "or choose strategy random, optuna or keras_tuner")
        if self.search.strategy == "grid" and self.grid_size() > MAX_GRID:
            raise ValueError(f"space: {self.grid_size():,} combinations; the limit is {MAX_GRID:,}; "
                             "use strategy random or optuna")
        if self.search.strategy != "grid" and self.search.trials is None:
            raise ValueError(f"search.trials: the {self.search.strategy} strategy needs a trial budget")
        if self.training.repeats > 1 and self.search.strategy == "keras_tuner":
            raise ValueError("training.repeats: Keras Tuner's oracle scores each trial it asks for once; use strategy "
                             "grid, random or optuna to repeat points, or repeats 1")
        if self.search.warm_start and self.search.strategy not in ("optuna", "random"):
            raise ValueError("search.warm_start: only the optuna and random strategies learn from earlier sweeps "
                             "(a grid reuses finished trial keys by itself)")
        schedule = self.search.schedule
        if schedule is not None:
            fits = {"successive_halving": ("grid",), "asha": ("random", "optuna")}[schedule.kind]
            if self.search.strategy not in fits:
                other = "asha" if schedule.kind == "successive_halving" else "successive_halving"
                hint = ("keras_tuner's hyperband oracle has its own schedule" if self.search.strategy == "keras_tuner"
                        else f"use kind {other}")
                raise ValueError(f"search.schedule: {schedule.kind} cannot be used by the {self.search.strategy} "
                                 f"strategy ({hint})")
            if self.search.pruner != "none":
                raise ValueError("search.schedule: a schedule and search.pruner both stop trials early; "
                                 "choose one")
            swept = [v for sub in self.space for v in (sub.get("epochs") if isinstance(sub.get("epochs"), list)
                                                       else [])]
            smallest = min([self.training.epochs, *[v for v in swept if isinstance(v, int)]])
            if schedule.min_epochs > smallest:
                raise ValueError(f"search.schedule.min_epochs: {schedule.min_epochs} is above training.epochs "
                                 f"({smallest})")
        return self

    def grid_size(self) -> int:
        """Combinations of the grid, counted without enumerating them."""
        return sum(math.prod(len(v) if isinstance(v, list) else 1 for v in sub.values()) for sub in self.space)

    def named_files(self) -> frozenset[tuple[str, str]]:
        """(parameter, value) of every file path the sweep file names: the only files a trial read back from the
        shared study or tracking store may load (weights: imagenet/none name no file)."""
        return frozenset((name, value.strip()) for sub in self.space for name, values in sub.items()
                         if name in FILE_PARAMETERS and isinstance(values, list)
                         for value in values if isinstance(value, str))

    def parsed_constraints(self) -> list[Constraint]:
        known = set(PARAMETERS)
        return [parse_constraint(text, known, PARAMETER_ALIASES, canonical_value) for text in self.constraints]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude_none=True), sort_keys=False)

    def shareable(self) -> dict[str, Any]:
        """The sweep as the study and MLflow keep it, the one masked copy every recorded form (the study's and
        MLflow's sweep.yaml, the parent run's parameters) is built from: URLs masked, the webhook's secret path
        left out (a worker joining by study name notifies only with its own --notify)."""
        shared = self
        if self.notify.url:
            shared = self.model_copy(update={"notify": self.notify.model_copy(
                update={"url": mask_webhook(self.notify.url)})})
        return _masked(shared.model_dump(mode="json", exclude_none=True))

    def shareable_yaml(self) -> str:
        return yaml.safe_dump(self.shareable(), sort_keys=False)

    def without_masked_urls(self) -> Sweep:
        """A sweep read back from a study: a masked webhook is no webhook (its secret was never stored)."""
        if self.notify.url and MASK in self.notify.url:
            return self.model_copy(update={"notify": self.notify.model_copy(update={"url": None})})
        return self


def _masked(value: Any) -> Any:
    """Every text inside a dumped sweep with its URLs masked."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {key: _masked(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_masked(item) for item in value]
    return value


def load_sweep(path: str | Path, overrides: dict[str, Any] | None = None) -> Sweep:
    """Read and validate a sweep file; a one-line UserError names the file and key path."""
    path = Path(path)
    data = read_yaml_mapping(path, "sweep file")
    return sweep_from_mapping(data, str(path), base=path.parent)


def sweep_from_mapping(data: dict[str, Any], source: str, base: Path | None = None) -> Sweep:
    try:
        sweep = Sweep.model_validate(data)
        sweep.parsed_constraints()
    except ValidationError as err:
        raise UserError(f"{source}: {validation_message(err, model=Sweep)}") from None
    except ConstraintError as err:
        raise UserError(f"{source}: constraints: {err}") from None
    root = sweep.data.root
    if base is not None and not root.is_absolute() and not root.exists() and (base / root).exists():
        sweep = sweep.model_copy(update={"data": sweep.data.model_copy(update={"root": base / root})})
    return sweep


# Command-line flags whose name differs from the resources key they override.
_FLAGS = {"memory_limit_mb": "memory-limit"}


def merged_resources(sweep: Sweep | None, overrides: dict[str, Any]) -> ResourcesConfig:
    """The sweep's resources (no sweep: the defaults) with the command line's overrides (None = not given),
    validated by the same model: a bad `--workers 0` is refused exactly as `resources.workers: 0` in the sweep
    file would be."""
    given = {name: value for name, value in overrides.items() if value is not None}
    base = sweep.resources if sweep is not None else ResourcesConfig()
    try:
        return ResourcesConfig.model_validate({**base.model_dump(), **given})
    except ValidationError as err:
        problem = err.errors()[0]
        name = str(problem["loc"][0]) if problem["loc"] else "resources"
        flag = f"--{_FLAGS.get(name, name.replace('_', '-'))}" if name in given else f"resources.{name}"
        raise UserError(f"{flag}: {problem['msg'].removeprefix('Value error, ')}") from None
