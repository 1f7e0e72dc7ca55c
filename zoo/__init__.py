"""The model zoo: what to build. Registries of backbones and architectures, datasets, windows and caches.

    import zoo
    zoo.list_architectures()                       # ['c3d', 'c3dsmall', 'image_mlp_frozen', ...]
    spec = zoo.ModelSpec(architecture="video_LRCNN_frozen", backbone="mobilenet_v2", sequence_length=5,
                         layer_1_size=64, weights="none", frame_size="96x96")
    model = zoo.create_model(spec, num_classes=2)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from zoo.errors import DataError, InvalidSpec, UserError
from zoo.registry import (
    Architecture,
    Backbone,
    get_architecture,
    get_backbone,
    list_architectures,
    list_backbones,
    register_architecture,
    register_backbone,
)

# Loaded on first use (PEP 562): `import zoo` (and so `zoo.errors`, which every command imports) stays cheap,
# so `videosweep --help` and the commands that only read do not pay for pandas and pydantic.
_LAZY = {"Dataset": "zoo.data", "load_dataset": "zoo.data", "ModelSpec": "zoo.spec", "canonical_spec": "zoo.spec",
         "invalid_reason": "zoo.spec", "missing_file_problem": "zoo.spec"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")


if TYPE_CHECKING:  # pragma: no cover
    import keras

    from zoo.data import Dataset, load_dataset
    from zoo.spec import ModelSpec, canonical_spec, invalid_reason, missing_file_problem


def validated_spec(spec: ModelSpec | dict[str, Any]) -> ModelSpec:
    """Canonical spec the zoo can build, or InvalidSpec/UserError with the reason."""
    from zoo.backbones import resolve_weights
    from zoo.spec import ModelSpec, canonical_spec, invalid_reason, missing_file_problem

    canonical = canonical_spec(spec if isinstance(spec, ModelSpec) else ModelSpec.model_validate(spec))
    reason = invalid_reason(canonical)
    if reason:
        raise InvalidSpec(f"invalid combination: {reason}")
    problem = missing_file_problem(canonical)
    if problem:
        raise UserError(problem)
    if canonical.backbone is not None:
        resolve_weights(canonical)  # imagenet weights not cached: a clear error before any work
    return canonical


def create_model(spec: ModelSpec | dict[str, Any], num_classes: int) -> keras.Model:
    """Build the (uncompiled) Keras model a spec describes."""
    canonical = validated_spec(spec)
    return get_architecture(canonical.architecture).build(canonical, num_classes)


__all__ = [
    "Architecture",
    "Backbone",
    "DataError",
    "Dataset",
    "InvalidSpec",
    "ModelSpec",
    "UserError",
    "canonical_spec",
    "create_model",
    "get_architecture",
    "get_backbone",
    "invalid_reason",
    "list_architectures",
    "list_backbones",
    "load_dataset",
    "missing_file_problem",
    "register_architecture",
    "register_backbone",
    "validated_spec",
]
