"""The zoo's registries: which architectures and backbones exist, looked up by name or research alias.

Builders register themselves with `@register_architecture` / `@register_backbone` next to their code, as in
timm, so adding a model touches one file. Nothing here imports TensorFlow: listing, validating and
canonicalising specs stays cheap for the planner and the CLI.
"""

from __future__ import annotations

from zoo.errors import did_you_mean

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal

if TYPE_CHECKING:  # pragma: no cover
    from zoo.spec import ModelSpec

InputKind = Literal["features", "frames"]


@dataclass(frozen=True)
class Architecture:
    """One registered architecture: how to build it, what it consumes and which parameters matter to it."""

    name: str
    build: Callable[..., Any]
    inputs: InputKind  # "features": precomputed backbone features; "frames": raw RGB frames in [0, 255]
    uses: frozenset[str]  # spec fields that change the model; the others are reset when canonicalising
    defaults: dict[str, Any] = field(default_factory=dict)
    check: Callable[["ModelSpec"], str | None] | None = None
    description: str = ""

    @property
    def needs_backbone(self) -> bool:
        return "backbone" in self.uses


@dataclass(frozen=True)
class Backbone:
    """One registered ImageNet backbone (Keras application without its top)."""

    name: str
    application: str  # attribute of keras.applications, resolved lazily
    preprocessing: Literal["tf", "caffe"]  # tf: scale to [-1, 1]; caffe: RGB->BGR minus ImageNet means
    native_size: int
    min_size: int
    imagenet_file: str  # file name Keras caches in ~/.keras/models
    num_features: int
    aliases: tuple[str, ...] = ()
    # Extract features with a frozen graph (weights as constants, batch-norm folded into the convolutions):
    # worth it where it is much faster and the one-off freezing is cheap (see zoo.features.compiled_inference).
    freeze_for_extraction: bool = False


_ARCHITECTURES: dict[str, Architecture] = {}
_BACKBONES: dict[str, Backbone] = {}
_ALIASES: dict[str, dict[str, str]] = {"architecture": {}, "backbone": {}}


def _alias_key(name: str) -> str:
    return name.strip().lower()


def register_architecture(
    name: str,
    *,
    inputs: InputKind,
    uses: tuple[str, ...],
    defaults: dict[str, Any] | None = None,
    check: Callable[["ModelSpec"], str | None] | None = None,
    aliases: tuple[str, ...] = (),
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register `build(spec, num_classes) -> keras.Model` under `name` (case-insensitive) and its aliases."""

    def decorator(build: Callable[..., Any]) -> Callable[..., Any]:
        key = _alias_key(name)
        if key in _ARCHITECTURES:
            raise ValueError(f"architecture {name!r} is registered twice")
        _ARCHITECTURES[key] = Architecture(
            name=key,
            build=build,
            inputs=inputs,
            uses=frozenset(("architecture",) + tuple(uses)),
            defaults=dict(defaults or {}),
            check=check,
            description=(build.__doc__ or "").strip().splitlines()[0] if build.__doc__ else "",
        )
        for alias in (key, *aliases):
            _ALIASES["architecture"][_alias_key(alias)] = key
        return build

    return decorator


def register_backbone(backbone: Backbone) -> Backbone:
    key = _alias_key(backbone.name)
    if key in _BACKBONES:
        raise ValueError(f"backbone {backbone.name!r} is registered twice")
    _BACKBONES[key] = backbone
    for alias in (key, *backbone.aliases):
        _ALIASES["backbone"][_alias_key(alias)] = key
    return backbone


def _ensure_loaded() -> None:
    # Importing the modules runs their decorators; done lazily to avoid an import cycle with zoo.spec.
    import zoo.architectures  # noqa: F401
    import zoo.backbones  # noqa: F401


def _resolve(kind: str, name: str, choices: list[str]) -> str:
    key = _ALIASES[kind].get(_alias_key(name))
    if key is None:
        raise KeyError(f"unknown {kind} {name!r}; choose one of: {', '.join(choices)}"
                       + did_you_mean(name, list(_ALIASES[kind]), _ALIASES[kind]))
    return key


def resolve_architecture_name(name: str) -> str:
    return _resolve("architecture", name, list_architectures())


def resolve_backbone_name(name: str) -> str:
    return _resolve("backbone", name, list_backbones())


def get_architecture(name: str) -> Architecture:
    return _ARCHITECTURES[resolve_architecture_name(name)]


def get_backbone(name: str) -> Backbone:
    return _BACKBONES[resolve_backbone_name(name)]


def list_architectures() -> list[str]:
    _ensure_loaded()
    return sorted(_ARCHITECTURES)


def list_backbones() -> list[str]:
    _ensure_loaded()
    return sorted(_BACKBONES)
