"""One metric vocabulary: what a trial records, under which name in results.json and in MLflow, and which way
is better. The worker, the tracker and the reports all read these tables instead of keeping their own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zoo.baselines import SPLIT_NAMES
from zoo.errors import UserError

# Per-epoch values a trial's history holds and MLflow receives once per step.
EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "round")
# Logged at step S (value S) when an attempt continued from a checkpoint (a resumed, retried or re-queued trial,
# or one promoted to the next rung) and S is the first epoch step it trained: where a learning curve carries on.
CONTINUED_METRIC = "continued_at_step"

# MLflow's name of each final metric of a trial run -> its key in results.json (the research code's names).
FINAL_METRICS: dict[str, str] = {
    "val_accuracy_best": "fit_val_acc", "val_loss_best": "fit_val_loss",
    "test_accuracy": "fit_test_acc", "test_loss": "fit_test_loss",
    "train_accuracy": "fit_train_acc", "train_loss": "fit_train_loss",
    "best_round": "fit_best_round", "epochs": "fit_num_epochs", "param_count": "model_param_count",
    "train_seconds": "fit_dt_train_duration_seconds", "test_seconds": "fit_dt_test_duration_seconds",
    "compile_seconds": "compile_seconds",
    # the end-to-end model on raw frames (backbone included), measured where the trial ran (runner/trial/latency.py)
    "latency_ms": "model_latency_ms", "throughput_fps": "model_throughput_fps",
    "deployed_param_count": "model_e2e_param_count", "model_size_mb": "model_size_mb",
    "latency_seconds": "model_latency_seconds",
    # what a constant answer scores on the same windows (zoo/baselines.py): the floor a trial must clear
    **{name: name for split in SPLIT_NAMES.values()
       for name in (f"baseline_{split}_majority_accuracy", f"baseline_{split}_effective_units")},
    "baseline_chance": "baseline_chance",
}

# Results a finished study trial also keeps as user attributes (the study alone then tells how each trial did).
STUDY_RESULTS = ("fit_val_acc", "fit_test_acc", "fit_val_loss", "fit_best_round", "model_param_count",
                 "fit_dt_train_duration_seconds")


@dataclass(frozen=True)
class Objective:
    """A metric a sweep can optimise, as sweep files name it."""

    name: str
    final: str  # the trial run's final metric in MLflow
    direction: str  # maximize | minimize
    per_epoch: str  # the per-epoch value the pruner watches

    @property
    def result_key(self) -> str:
        return FINAL_METRICS[self.final]

    def value(self, results: dict[str, Any]) -> float:
        return float(results[self.result_key])

    def better(self, value: float, than: float | None) -> bool:
        return than is None or (value > than if self.direction == "maximize" else value < than)


OBJECTIVES: dict[str, Objective] = {o.name: o for o in (
    Objective("val_accuracy", "val_accuracy_best", "maximize", "val_accuracy"),
    Objective("val_loss", "val_loss_best", "minimize", "val_loss"),
    Objective("train_accuracy", "train_accuracy", "maximize", "val_accuracy"),
    # deployment figures: known only when a trial ends, so a pruner still watches validation accuracy
    Objective("latency_ms", "latency_ms", "minimize", "val_accuracy"),
    Objective("throughput_fps", "throughput_fps", "maximize", "val_accuracy"),
    Objective("param_count", "deployed_param_count", "minimize", "val_accuracy"),
    Objective("model_size_mb", "model_size_mb", "minimize", "val_accuracy"),
)}
# Held-out figures -> the validation metric to use instead. Trials record and reports show them (labelled held
# out), but nothing that chooses (search, stop rules, ranking, best, export) may read them: a model chosen on the
# test split has no unbiased estimate left.
HELD_OUT = {"test_accuracy": "val_accuracy", "test_loss": "val_loss"}
# What a single-objective sweep's Pareto front pairs its metric with.
DEFAULT_COST = "latency_ms"


def held_out(name: str) -> str:
    """Why a test-split metric cannot choose anything, and what to use instead."""
    return (f"{name} is measured on the held-out test split, which reports a chosen model and never chooses "
            f"one; use {HELD_OUT[name]}")


def objective(name: str) -> Objective:
    """The objective a sweep file or `--metric` names; one line listing the choices otherwise."""
    if name in HELD_OUT:
        raise UserError(held_out(name))
    if name not in OBJECTIVES:
        raise UserError(f"unknown metric {name!r}; choose one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]


def final_metrics(results: dict[str, Any]) -> dict[str, float]:
    """A trial's results.json as MLflow's final metrics (numbers only)."""
    return {name: float(results[key]) for name, key in FINAL_METRICS.items()
            if isinstance(results.get(key), (int, float)) and not isinstance(results.get(key), bool)}
