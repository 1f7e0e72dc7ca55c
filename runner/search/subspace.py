"""Sub-spaces as every search strategy sees them: which sub-space, the label of each swept parameter, the
choices a categorical offers, and decoding a strategy's values back into flat sweep parameters.

A sweep has one or more sub-spaces; with several, a `subspace` choice comes first and each parameter's label
is prefixed by its sub-space index (`1.layer_1_size`) so that sub-spaces never share a distribution.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from runner.spec.sweep import Range, SpaceValue, Sweep

SUBSPACE = "subspace"


def choice_label(value: Any) -> Any:
    """Categoricals hold scalars only; lists (learning_rates) are offered by their text."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else repr(value)


def label(sweep: Sweep, index: int, name: str) -> str:
    return f"{index}.{name}" if len(sweep.space) > 1 else name


def swept(sweep: Sweep, index: int) -> Iterator[tuple[str, str, SpaceValue]]:
    """(name, label, values) of each parameter of sub-space `index` that a strategy must choose: ranges and
    lists of more than one value (single values are fixed)."""
    for name, values in sweep.space[index].items():
        if isinstance(values, Range) or len(values) > 1:
            yield name, label(sweep, index, name), values


def decode(sweep: Sweep, index: int, chosen: dict[str, Any]) -> dict[str, Any]:
    """Flat sweep parameters of sub-space `index` from the strategy's values by label (choices by their text)."""
    params: dict[str, Any] = {}
    for name, values in sweep.space[index].items():
        if isinstance(values, Range):
            params[name] = chosen[label(sweep, index, name)]
        elif len(values) == 1:
            params[name] = values[0]
        else:
            params[name] = values[[choice_label(v) for v in values].index(chosen[label(sweep, index, name)])]
    return params
