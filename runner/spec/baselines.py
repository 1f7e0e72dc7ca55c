"""A sweep's baselines (zoo/baselines.py) for every window length its trials can use: what `plan`, `status` and
the parent run show. Each trial also records its own, over its own windows (runner/trial/training.py); reports use those.

A window of L frames takes its last frame's label and a video gives L - 1 fewer windows than frames, so the
baseline can move with the window length: it is kept per length, as `baseline.L<length>.<split>.<field>`
parameters on the parent run, with `baseline.chance` once.
"""

from __future__ import annotations

from typing import Any

import zoo
from runner.spec.sweep import Range
from zoo.baselines import Baseline, window_baselines
from zoo.data import Dataset


def _lengths_of(values: Any, default: int) -> set[int]:
    if values is None:
        return {default}
    if isinstance(values, Range):
        return set(range(int(values.low), int(values.high) + 1, int(values.step or 1)))
    return {int(value) for value in values}


def window_lengths(sweep: Any) -> list[int]:
    """Every window length the sweep's space can give a trial (1 for architectures that see one frame)."""
    lengths: set[int] = set()
    for sub in sweep.space:
        for name in sub["architecture"]:
            arch = zoo.get_architecture(str(name))
            if "sequence_length" not in arch.uses:
                lengths.add(1)
                continue
            unset = zoo.ModelSpec.model_fields["sequence_length"].default
            default = int(arch.defaults.get("sequence_length", unset))
            # as canonical_spec does: the architecture's default replaces a missing or ModelSpec-default value
            lengths |= {default if n == unset else n for n in _lengths_of(sub.get("sequence_length"), default)}
    return sorted(lengths)


def sweep_baselines(sweep: Any, dataset: Dataset) -> dict[int, dict[str, Baseline]]:
    """Window length -> split (train/val/test) -> its baseline."""
    return {length: window_baselines(dataset, length) for length in window_lengths(sweep)}


def parent_params(baselines: dict[int, dict[str, Baseline]]) -> dict[str, str]:
    """The parent run's parameters: baseline.L<length>.<split>.{windows,majority_class,majority_accuracy,
    effective_units} and baseline.chance."""
    params: dict[str, str] = {}
    for length, splits in baselines.items():
        for split, baseline in splits.items():
            params.update({f"baseline.L{length}.{split}.windows": str(baseline.windows),
                           f"baseline.L{length}.{split}.majority_class": baseline.majority_class,
                           f"baseline.L{length}.{split}.majority_accuracy": f"{baseline.majority_accuracy:.6g}",
                           f"baseline.L{length}.{split}.effective_units": f"{baseline.effective_units:.6g}"})
            params["baseline.chance"] = f"{baseline.chance:.6g}"
    return params


def baselines_json(sweep: Any, dataset: Dataset) -> dict[int, dict[str, dict[str, Any]]]:
    """sweep_baselines as plain data (plan --json)."""
    return {length: {split: b.as_dict() for split, b in splits.items()}
            for length, splits in sweep_baselines(sweep, dataset).items()}


def baseline_lines(baselines: dict[int, dict[str, dict[str, Any]]]) -> list[str]:
    """One line per window length for people (from baselines_json): the majority class's accuracy per split,
    and chance."""
    lines = []
    for length, splits in baselines.items():
        shown = ", ".join(f"{split} {b['majority_accuracy']:.4f} ({b['majority_class']}, {b['windows']} windows)"
                          for split, b in splits.items())
        chance = next(iter(splits.values()))["chance"]
        lines.append(f"baseline, windows of {length} frame(s): always answering the majority class scores {shown}; "
                     f"chance {chance:.4f}")
    return lines
