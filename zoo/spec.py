"""What a model is: the validated, canonical parameters of one zoo model, and whether the zoo can build it.

`ModelSpec` accepts the research code's spellings (`image_MLP_frozen`, `pretrained_model_name`,
`mobilenetv2_1.00_224`, `Convolution1D`) case-insensitively and stores the canonical ones. `canonical_spec`
resets the parameters an architecture ignores and fills its defaults, so two specs that build the same
model compare (and hash) equal. `invalid_reason` is the zoo's cheap verdict on a combination.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from zoo import registry

SequenceModel = Literal["LSTM", "SimpleRNN", "GRU", "Conv1D"]
_SEQUENCE_ALIASES = {
    "lstm": "LSTM",
    "simplernn": "SimpleRNN",
    "rnn": "SimpleRNN",
    "gru": "GRU",
    "conv1d": "Conv1D",
    "convolution1d": "Conv1D",
}
MAX_FRAME_SIDE = 2048  # a frame cache holds every frame: 725 frames of 2048x2048 RGB are already 9 GB
_FRAME_SIZE = re.compile(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*")


def parse_frame_size(value: Any) -> tuple[int, int] | None:
    """`"96x96"` (width x height), `96`, `[96, 96]` -> (width, height)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "native")):
        return None
    if isinstance(value, bool):
        raise ValueError("frame_size must look like 96x96")
    if isinstance(value, int):
        size = (value, value)
    elif isinstance(value, str):
        match = _FRAME_SIZE.fullmatch(value)
        if match is None:
            if value.strip().isdigit():
                size = (int(value), int(value))
            else:
                raise ValueError(f"frame_size {value!r} must look like 96x96 (width x height)")
        else:
            size = (int(match.group(1)), int(match.group(2)))
    elif isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        size = (int(value[0]), int(value[1]))
    else:
        raise ValueError(f"frame_size {value!r} must look like 96x96 (width x height)")
    if min(size) <= 0:
        raise ValueError(f"frame_size {value!r} must be positive")
    if max(size) > MAX_FRAME_SIDE:
        raise ValueError(f"frame_size {value!r} is too large: at most {MAX_FRAME_SIDE}x{MAX_FRAME_SIDE}")
    return size


WEIGHTS_WITHOUT_FILE = ("imagenet", "none")  # `weights` values that name no file (any other value is a path)


def format_frame_size(size: tuple[int, int] | None) -> str | None:
    return None if size is None else f"{size[0]}x{size[1]}"


class ModelSpec(BaseModel):
    """The parameters that define one zoo model. Every field has a default; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    architecture: str = Field(description="Architecture name, e.g. video_lrcnn_frozen (see `videosweep zoo`).")
    backbone: str | None = Field(
        None,
        validation_alias=AliasChoices("backbone", "pretrained_model_name"),
        description="ImageNet backbone for the feature-based and trainable architectures.",
    )
    weights: str = Field(
        "imagenet", description="Backbone weights: imagenet (Keras's file, fetched once per machine if not cached), "
        "none (random init) or a .h5 path."
    )
    pooling: Literal["max", "avg"] | None = Field(None, description="Global pooling of the backbone's last map.")
    frame_size: tuple[int, int] | None = Field(
        None, description="Frames are resized to WIDTHxHEIGHT (each side 1 to 2048); default: the backbone's native "
        "size (C3D: 112x112)."
    )
    sequence_length: int = Field(1, ge=1, description="Frames per window; a window's label is its last frame's.")
    sequence_model: SequenceModel | None = Field(None, description="Recurrent or 1-D conv layer type (LRCNN).")
    sequence_model_layers: int | None = Field(None, ge=1, le=3, description="Stacked sequence layers, 1-3.")
    layer_1_size: int = Field(0, ge=0, description="Units of the first head layer (0: none).")
    layer_2_size: int = Field(0, ge=0, description="Units of the second head layer (0: none).")
    layer_3_size: int = Field(0, ge=0, description="Units of the third head layer (0: none).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout rate used throughout the head.")
    convolution_kernel_size: int = Field(3, ge=1, description="Kernel of Conv1D sequence layers.")
    model_weights_path: str | None = Field(
        None, description="Weights (.h5/.weights.h5) loaded into the backbone of video_lrcnn_trainable."
    )

    @field_validator("architecture", mode="before")
    @classmethod
    def _architecture(cls, value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError("architecture must be a name")
        try:
            return registry.resolve_architecture_name(value)
        except KeyError as err:
            raise ValueError(err.args[0]) from None

    @field_validator("backbone", mode="before")
    @classmethod
    def _backbone(cls, value: Any) -> str | None:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
            return None
        if not isinstance(value, str):
            raise ValueError("backbone must be a name")
        try:
            return registry.resolve_backbone_name(value)
        except KeyError as err:
            raise ValueError(err.args[0]) from None

    @field_validator("weights", mode="before")
    @classmethod
    def _weights(cls, value: Any) -> str:
        if value is None:
            return "none"
        if not isinstance(value, str) or not value.strip():
            raise ValueError("weights must be imagenet, none or a file path")
        lowered = value.strip().lower()
        return lowered if lowered in WEIGHTS_WITHOUT_FILE else value.strip()

    @field_validator("pooling", mode="before")
    @classmethod
    def _pooling(cls, value: Any) -> Any:
        if isinstance(value, str):
            lowered = value.strip().lower()
            return {"none": None, "average": "avg", "mean": "avg"}.get(lowered, lowered)
        return value

    @field_validator("frame_size", mode="before")
    @classmethod
    def _frame_size(cls, value: Any) -> tuple[int, int] | None:
        return parse_frame_size(value)

    @field_validator("sequence_model", mode="before")
    @classmethod
    def _sequence_model(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value.strip().lower() in ("", "none"):
                return None
            canonical = _SEQUENCE_ALIASES.get(value.strip().lower())
            if canonical is None:
                raise ValueError(f"unknown sequence_model {value!r}; choose one of: LSTM, SimpleRNN, GRU, Conv1D")
            return canonical
        return value

    @property
    def input_shape_hw(self) -> tuple[int, int]:
        """(height, width) of the frames this spec expects; only meaningful on a canonical spec."""
        assert self.frame_size is not None, "canonicalise the spec first"
        return self.frame_size[1], self.frame_size[0]


MODEL_FIELDS: tuple[str, ...] = tuple(ModelSpec.model_fields)
_VALUE_SPELLINGS = {"architecture": ModelSpec._architecture, "backbone": ModelSpec._backbone,
                    "weights": ModelSpec._weights, "pooling": ModelSpec._pooling,
                    "sequence_model": ModelSpec._sequence_model,
                    "frame_size": lambda value: format_frame_size(parse_frame_size(value))}


def canonical_value(name: str, value: Any) -> Any:
    """A value as a canonical flat spec holds it (`mobilenetv2_1.00_224` -> `mobilenet_v2`); unknown: unchanged."""
    spell = _VALUE_SPELLINGS.get(name)
    if spell is None:
        return value
    try:
        return spell(value)
    except ValueError:
        return value


def used_parameters(architecture: str, sequence_model: str | None) -> frozenset[str]:
    """Model parameters that shape this model: its architecture's, less the kernel size unless Conv1D."""
    uses = registry.get_architecture(architecture).uses
    return uses if sequence_model == "Conv1D" else uses - {"convolution_kernel_size"}


def canonical_spec(spec: ModelSpec) -> ModelSpec:
    """Reset what the architecture ignores, fill its defaults, so equal models have equal specs."""
    arch = registry.get_architecture(spec.architecture)
    values = spec.model_dump()
    for name, info in ModelSpec.model_fields.items():
        if name not in arch.uses:
            values[name] = info.default
    for name, default in arch.defaults.items():
        if values.get(name) in (None, ModelSpec.model_fields[name].default) and name in arch.uses:
            values[name] = default
    if values.get("sequence_model_layers"):  # a stack deeper than its non-zero sizes builds the same model
        sizes = [values["layer_1_size"], values["layer_2_size"], values["layer_3_size"]]
        nonzero = next((i for i, size in enumerate(sizes) if size == 0), len(sizes))
        values["sequence_model_layers"] = max(1, min(values["sequence_model_layers"], nonzero))
    if values.get("sequence_model") != "Conv1D":
        values["convolution_kernel_size"] = ModelSpec.model_fields["convolution_kernel_size"].default
    if arch.needs_backbone and values["backbone"] is not None:
        if values["frame_size"] is None:
            native = registry.get_backbone(values["backbone"]).native_size
            values["frame_size"] = (native, native)
    return ModelSpec.model_validate(values)


def invalid_reason(spec: ModelSpec) -> str | None:
    """Why the zoo cannot build this (canonical) spec, or None when it can. Cheap: no TensorFlow."""
    arch = registry.get_architecture(spec.architecture)
    sizes = [spec.layer_1_size, spec.layer_2_size, spec.layer_3_size]
    for index in range(len(sizes) - 1):
        if sizes[index] == 0 and any(sizes[index + 1 :]):
            return f"layer_{index + 1}_size is 0 but a later layer size is not (layers stack in order)"
    if arch.needs_backbone:
        if spec.backbone is None:
            return f"{arch.name} needs a backbone"
        backbone = registry.get_backbone(spec.backbone)
        if spec.frame_size is not None and min(spec.frame_size) < backbone.min_size:
            return f"{backbone.name} needs frames of at least {backbone.min_size}x{backbone.min_size}"
    if arch.check is not None:
        return arch.check(spec)
    return None


FILE_PARAMETERS = ("weights", "model_weights_path")  # parameters whose value can name a file to load


def file_parameters(spec: ModelSpec) -> dict[str, str]:
    """The files the spec would load, by parameter (weights other than imagenet/none, model_weights_path)."""
    files = {"weights": spec.weights} if spec.weights not in WEIGHTS_WITHOUT_FILE else {}
    if spec.model_weights_path:
        files["model_weights_path"] = spec.model_weights_path
    return files


def missing_file_problem(spec: ModelSpec) -> str | None:
    """A weights file the spec names but that does not exist (a user error, not an invalid combination)."""
    for name, value in file_parameters(spec).items():
        if not Path(value).expanduser().is_file():
            return f"weights file {value} does not exist" if name == "weights" else f"{name} {value} does not exist"
    return None
