"""Search-space expansion: pure functions from a sweep to trial specs, invalid ones dropped with a reason.

Order is deterministic (sub-spaces in file order, values in listed order, the product varying the last key
fastest); parameters are canonicalised by the zoo, so combinations that build the same model collapse into
one trial; the zoo's validity check and the sweep's constraints drop the rest, counted by reason.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from runner.spec.sweep import Range, Sweep
from runner.spec.trial_spec import TRAINING_FIELDS, TrialSpec
from zoo.errors import UserError
from zoo.spec import invalid_reason

MAX_DROPPED_EXAMPLES = 200  # kept for `plan --verbose`; the counts by reason cover the rest


@dataclass
class Expansion:
    """The outcome of expanding a grid: trials in order, what was dropped and why."""

    trials: list[TrialSpec] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    point_keys: list[str] = field(default_factory=list)  # each trial's point (its own key without repeats)
    per_subspace: list[int] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)
    dropped_examples: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    duplicates: int = 0

    @property
    def combinations(self) -> int:
        return len(set(self.point_keys)) + sum(self.dropped.values()) + self.duplicates

    def add(self, spec: TrialSpec, fingerprint: str, repeats: int) -> None:
        """A point and its seed repeats (training.repeats), each a trial of its own, grouped by the point key."""
        point = spec.key(fingerprint)
        for repeat in range(repeats):
            trial = spec.with_repeat(repeat)
            self.trials.append(trial)
            self.keys.append(trial.key(fingerprint) if repeat else point)
            self.point_keys.append(point)


def base_params(sweep: Sweep) -> dict[str, Any]:
    """Training settings every trial starts from (a sub-space may override them)."""
    return sweep.training.model_dump(include=set(TRAINING_FIELDS))


def judge(sweep: Sweep, params: dict[str, Any], where: str) -> tuple[TrialSpec | None, str | None]:
    """(canonical trial, None) or (None, why it is dropped). Bad values raise a UserError."""
    spec = TrialSpec.from_flat({**base_params(sweep), **params}, where=where)
    reason = invalid_reason(spec.model)
    if reason:
        return None, reason
    flat = spec.flat()
    for constraint in sweep.parsed_constraints():
        if not constraint.holds(flat):
            return None, f"constraint: {constraint.text}"
    return spec, None


def expand_grid(sweep: Sweep, fingerprint: str) -> Expansion:
    """Every grid point of every sub-space, canonical, valid and unique, in a deterministic order."""
    expansion = Expansion()
    seen: set[str] = set()
    for index, sub in enumerate(sweep.space):
        names = list(sub)
        kept = 0
        for values in itertools.product(*(sub[name] for name in names)):
            if any(isinstance(v, Range) for v in values):
                raise UserError(f"space.{index}: ranges need a sampling strategy")
            params = dict(zip(names, values))
            spec, reason = judge(sweep, params, f"space.{index}: ")
            if spec is None:
                expansion.dropped[reason or "invalid"] += 1
                if len(expansion.dropped_examples) < MAX_DROPPED_EXAMPLES:
                    expansion.dropped_examples.append((params, reason or "invalid"))
                continue
            key = spec.key(fingerprint)
            if key in seen:
                expansion.duplicates += 1
                continue
            seen.add(key)
            expansion.add(spec, fingerprint, sweep.training.repeats)
            kept += sweep.training.repeats
        expansion.per_subspace.append(kept)
    return expansion


def cache_sizes(trials: list[TrialSpec], frames: int) -> dict[str, int]:
    """Bytes of each cache entry the trials need: resized frames (uint8 RGB) or backbone features (float32)."""
    from zoo import get_architecture, get_backbone

    sizes: dict[str, int] = {}
    for spec in trials:
        model = spec.model
        width, height = model.frame_size or (0, 0)
        if get_architecture(model.architecture).inputs == "features":
            entry = f"features {model.backbone}/{model.pooling}/{width}x{height}/{model.weights}"
            sizes[entry] = frames * get_backbone(str(model.backbone)).num_features * 4
        else:
            sizes[f"frames {width}x{height}"] = frames * width * height * 3
    return sizes


def shared_extractions(trials: list[TrialSpec]) -> Counter[str]:
    """Backbone feature extractions the trials need (each computed once, then cached), with their users."""
    from zoo import get_architecture

    needed: Counter[str] = Counter()
    for spec in trials:
        model = spec.model
        if get_architecture(model.architecture).inputs == "features":
            size = f"{model.frame_size[0]}x{model.frame_size[1]}" if model.frame_size else "native"
            needed[f"{model.backbone}/{model.pooling}/{size}/{model.weights}"] += 1
    return needed


WEIGHTS_PARAMETERS = ("architecture", "backbone", "frame_size", "weights")  # what decides a weights file


def imagenet_weights_needed(sweep: Sweep) -> list[Any]:
    """The ImageNet weights files (zoo.weights.WeightsFile) the sweep's trials can load: a grid's trials, or
    for a sampler every combination of the sub-spaces' architectures, backbones, frame sizes and weights."""
    from zoo.weights import needed_by

    if sweep.search.strategy == "grid":
        models = [spec.model for spec in expand_grid(sweep, "").trials]
    else:
        models = []
        for index, sub in enumerate(sweep.space):
            names = [name for name in WEIGHTS_PARAMETERS if name in sub]
            choices = [value if isinstance(value, list) else [value] for value in (sub[name] for name in names)]
            for values in itertools.product(*choices):
                spec, _ = judge(sweep, dict(zip(names, values)), f"space.{index}: ")
                if spec is not None:
                    models.append(spec.model)
    return list(dict.fromkeys(file for model in models for file in needed_by(model)))
