"""The trial spec: one model spec plus how to train it, parsed from flat `key=value` parameters.

A sweep point, `videosweep train --set ...` and a `--config trial.yaml` all become the same `TrialSpec`, so
a trial is identified (and hashed into its trial key) the same way wherever it comes from.
"""

from __future__ import annotations

import hashlib
import json
import re
import typing
from collections.abc import Collection
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from zoo import ModelSpec, canonical_spec
from zoo.errors import UserError, did_you_mean, one_line
from zoo.spec import MODEL_FIELDS, file_parameters, format_frame_size, used_parameters

CHECKPOINT_SECONDS = 30.0  # at most this often after an epoch: the sweep file's training.checkpoint_seconds default


class TrainingConfig(BaseModel):
    """How a trial is trained: rounds of Adam at decreasing learning rates with early stopping."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(20, ge=1, description="Maximum epochs per learning-rate round.")
    patience: int = Field(3, ge=1, description="Epochs without a better val_accuracy before a round stops.")
    learning_rates: tuple[float, ...] = Field(
        (1e-3, 1e-4, 1e-5), min_length=1, description="One round of Adam per rate, each from the best weights so far."
    )
    batch_size: int = Field(32, ge=1, description="Windows per batch.")
    seed: int = Field(0, ge=0, description="Seeds weight init, shuffling and dropout.")
    precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = Field(
        "float32", description="Keras dtype policy: float32 | mixed_float16 | mixed_bfloat16 (mixed: GPUs with "
        "tensor cores; part of the trial key only when not float32).")

    @field_validator("learning_rates", mode="before")
    @classmethod
    def _rates(cls, value: Any) -> Any:
        if isinstance(value, (int, float, str)):
            value = [value]
        return value

    @field_validator("learning_rates")
    @classmethod
    def _positive(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(rate <= 0 for rate in value):
            raise ValueError("learning rates must be positive")
        return value


TRAINING_FIELDS: tuple[str, ...] = tuple(TrainingConfig.model_fields)
PARAMETERS: tuple[str, ...] = MODEL_FIELDS + TRAINING_FIELDS
PARAMETER_ALIASES = {"pretrained_model_name": "backbone"}  # the research notebook's spellings


def canonical_parameter(key: str) -> str:
    """The canonical name of a parameter given in any accepted spelling (unknown names come back unchanged)."""
    return PARAMETER_ALIASES.get(key, key)


def known_keys(model: type[BaseModel] | None, path: tuple[Any, ...]) -> list[str]:
    """The keys a pydantic model accepts at `path` (nested models followed; lists of them too), [] if unknown."""
    for part in path:
        if isinstance(part, int):  # an item of a list: the list's model holds on
            continue
        if model is None or part not in model.model_fields:
            return []
        annotation = model.model_fields[part].annotation
        candidates = [annotation, *typing.get_args(annotation)]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return [] if model is None else [*model.model_fields, *(f.alias for f in model.model_fields.values() if f.alias)]


def validation_message(err: ValidationError, prefix: str = "", model: type[BaseModel] | None = None) -> str:
    """Pydantic's errors as one line: `key.path: message` for the first few problems."""
    parts = []
    for problem in err.errors()[:3]:
        where = ".".join(str(p) for p in problem["loc"]) or "value"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "unknown key" + did_you_mean(problem["loc"][-1], known_keys(model, problem["loc"][:-1]))
        elif problem["type"] == "literal_error":  # an unknown choice (a sampler, a pruner, ...)
            message += did_you_mean(problem["input"], re.findall(r"'([^']*)'", problem["ctx"]["expected"]))
        elif problem["type"] == "missing":
            message = "required"
        parts.append(f"{prefix}{where}: {message}")
    more = len(err.errors()) - 3
    return one_line("; ".join(parts) + (f" (and {more} more)" if more > 0 else ""))


MAX_REPEATS = 100  # training.repeats: seeds per point
REPEAT = "repeat"  # the flat parameter naming a trial's seed repeat (absent for repeat 0)


def repeat_seed(seed: int, repeat: int) -> int:
    """The seed repeat `repeat` of a point trains with: repeat 0 keeps `seed` (one repeat changes nothing), the
    others a hash of (seed, repeat), far from the small seeds people sweep by hand."""
    if repeat == 0:
        return seed
    digest = hashlib.sha256(f"videosweep-repeat:{seed}:{repeat}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class TrialSpec(BaseModel):
    """What one trial trains: the canonical model spec, the training settings and which seed repeat it is."""

    model_config = ConfigDict(frozen=True)

    model: ModelSpec
    training: TrainingConfig = TrainingConfig()
    repeat: int = Field(0, ge=0, lt=MAX_REPEATS, description="Seed repeat of the point (training.repeats).")

    @classmethod
    def from_flat(cls, params: dict[str, Any], where: str = "") -> TrialSpec:
        """Split flat parameters into model and training parts; one-line UserError on any problem."""
        model: dict[str, Any] = {}
        training: dict[str, Any] = {}
        repeat = params.get(REPEAT, 0)
        for key, value in params.items():
            if key == REPEAT:
                continue
            name = canonical_parameter(key)
            if name != key and name in params:
                raise UserError(f"{where}{key} and {name} name the same parameter; give one")
            if name in MODEL_FIELDS:
                model[name] = value
            elif name in TRAINING_FIELDS:
                training[name] = value
            else:
                raise UserError(f"{where}unknown parameter {key!r}; valid parameters: {', '.join(PARAMETERS)}")
        if "architecture" not in model:
            raise UserError(f"{where}architecture: required; choose one of the zoo's (`videosweep zoo`)")
        try:
            return cls(model=canonical_spec(ModelSpec.model_validate(model)), training=TrainingConfig(**training),
                       repeat=repeat)
        except ValidationError as err:
            raise UserError(validation_message(err, where)) from None

    def with_batch_size(self, batch_size: int | None) -> TrialSpec:
        """The same trial trained with another batch size (a retry after running out of memory); its key is still
        made from this spec's."""
        if batch_size is None:
            return self
        return self.model_copy(update={"training": self.training.model_copy(update={"batch_size": batch_size})})

    def with_repeat(self, repeat: int) -> TrialSpec:
        """Seed repeat `repeat` of this point (0: the point itself)."""
        return TrialSpec(model=self.model, training=self.training, repeat=repeat)

    def point(self) -> TrialSpec:
        """The point this trial repeats: the same spec as repeat 0, whose key is the point key."""
        return self.with_repeat(0)

    @property
    def run_seed(self) -> int:
        """The seed training uses: training.seed for repeat 0, one derived from it for the others."""
        return repeat_seed(self.training.seed, self.repeat)

    def flat(self) -> dict[str, Any]:
        """Canonical flat parameters (JSON-friendly: frame_size as WxH, rates as a list)."""
        values = {**self.model.model_dump(), **self.training.model_dump()}
        values["frame_size"] = format_frame_size(self.model.frame_size)
        values["learning_rates"] = list(self.training.learning_rates)
        if self.repeat:  # absent for repeat 0: keys and records of sweeps without repeats stay as they were
            values[REPEAT] = self.repeat
        return values

    def used_flat(self) -> dict[str, Any]:
        """The flat parameters less the model parameters this model does not use (C3D has no backbone weights):
        what MLflow and Optuna record, so a canonical default never looks chosen (`with_unused` restores them)."""
        used = used_parameters(self.model.architecture, self.model.sequence_model)
        return {name: value for name, value in self.flat().items() if name not in MODEL_FIELDS or name in used}

    def key(self, dataset_fingerprint: str) -> str:
        """A stable hash of the canonical parameters, training settings and data: the trial's identity."""
        params = self.flat()
        if params.get("precision") == "float32":  # the default leaves keys from before precision existed alone
            del params["precision"]
        payload = json.dumps({"params": params, "data": dataset_fingerprint}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:KEY_LENGTH]


KEY_LENGTH = 12
KEY_FORMAT = re.compile(rf"[0-9a-f]{{{KEY_LENGTH}}}")  # what `TrialSpec.key` makes: safe as a file name


def is_trial_key(value: object) -> bool:
    """Whether `value` has exactly the form of a trial key (it names folders: nothing else may)."""
    return isinstance(value, str) and KEY_FORMAT.fullmatch(value) is not None


def unlisted_files(spec: TrialSpec, named: Collection[tuple[str, str]]) -> list[str]:
    """`parameter value` of each file `spec` would load that is not among `named` (`Sweep.named_files`): a spec
    read back from a shared store loads only files the user's own sweep file names."""
    return [f"{name} {value}" for name, value in file_parameters(spec.model).items()
            if (name, value.strip()) not in named]


def parse_assignments(assignments: list[str]) -> dict[str, Any]:
    """`key=value` strings -> dict; values are YAML scalars/lists (safe_load: nothing is evaluated)."""
    params: dict[str, Any] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r}: expected key=value")
        try:
            params[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise UserError(f"--set {item!r}: cannot read the value") from None
    return params


def yaml_hint(err: Exception, text: str) -> str:
    """What a PyYAML syntax error most likely means, in words ("" when there is no good guess): its own
    messages ("expected <block end>, but found '<block mapping start>'") name parser states, not mistakes."""
    problem = f"{getattr(err, 'context', '') or ''} {getattr(err, 'problem', '') or ''}"
    mark = getattr(err, "problem_mark", None)
    lines = text.splitlines()
    near = lines[max(0, mark.line - 1): mark.line + 1] if mark is not None else lines
    if "\t" in problem or any("\t" in line[: len(line) - len(line.lstrip())] for line in near):
        return " (likely a tab: YAML indents with spaces only)"
    if "quoted scalar" in problem:
        return " (likely an unclosed quote)"
    if any(words in problem for words in ("block end", "block mapping", "mapping values are not allowed",
                                          "expected key", "block collection")):
        return " (likely wrong indentation: keys of one mapping must start in the same column)"
    if "flow" in problem:
        return " (likely an unclosed [ or {)"
    return ""


def read_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    """A YAML file whose top level is a mapping, or a one-line UserError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist")
    try:
        text = path.read_text()
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "malformed YAML"
        raise UserError(f"{path}: malformed YAML{where}: {problem}{yaml_hint(err, text)}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read ({err})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: the top level must be a mapping of keys to values")
    return data


def with_unused(params: dict[str, Any]) -> dict[str, Any]:
    """Recorded parameters (`TrialSpec.used_flat`) with those left out as unused back at their canonical values."""
    return {**{name: info.default for name, info in ModelSpec.model_fields.items()}, **params}
