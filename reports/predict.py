"""Prediction: an exported model (folder, registry URI or trial key) applied to frame folders or video files.

The output is the research code's frame prediction table: one probability column per class, `prediction`,
`video`, `frame`, `label`, `split`, `error`. Frames are read exactly as training read them. A windowed model
gives the first `sequence_length - 1` frames of each video no prediction (empty cells) rather than inventing
one. For exports that join a backbone to a head, each frame's features are computed once and then windowed.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from zoo.errors import DataError, UserError, one_line
from zoo.secrets import mask_text

if TYPE_CHECKING:  # pragma: no cover
    import keras

PREDICT_BATCH = 32


@dataclass
class Predictor:
    """A loaded export: the model, its classes and its input contract."""

    model: keras.Model
    classes: list[str]
    contract: dict[str, Any]
    source: str

    @property
    def frame_size(self) -> tuple[int, int]:
        return int(self.contract["width"]), int(self.contract["height"])

    @property
    def sequence_length(self) -> int:
        return int(self.contract["sequence_length"]) if self.contract["windowed"] else 1

    def probabilities(self, frames: np.ndarray) -> np.ndarray:
        """(N, classes) for one video's frames (N, H, W, 3); rows without a full window are NaN."""
        length = self.sequence_length
        out = np.full((len(frames), len(self.classes)), np.nan, dtype=np.float64)
        if len(frames) < length:
            return out
        source, model = self._per_frame_source(frames)
        ends = np.arange(length - 1, len(frames))
        offsets = np.arange(-(length - 1), 1)
        for start in range(0, len(ends), PREDICT_BATCH):
            batch_ends = ends[start : start + PREDICT_BATCH]
            batch = source[batch_ends[:, None] + offsets] if self.contract["windowed"] else source[batch_ends]
            out[batch_ends] = np.asarray(model(batch.astype(np.float32), training=False))
        return out

    def _per_frame_source(self, frames: np.ndarray) -> tuple[np.ndarray, Callable[..., Any]]:
        """Backbone features per frame and the head, when the export is a backbone joined to a head."""
        names = {layer.name for layer in self.model.layers}
        if not ({"frame_features", "head"} <= names):
            return frames, self.model
        backbone = self.model.get_layer("frame_features").layer
        features = np.concatenate([np.asarray(backbone(frames[i : i + PREDICT_BATCH].astype(np.float32),
                                                        training=False))
                                   for i in range(0, len(frames), PREDICT_BATCH)])
        return features, self.model.get_layer("head")


def _load_folder(folder: Path) -> Predictor:
    import keras

    meta_path, labels_path, model_path = folder / "export.json", folder / "labels.json", folder / "model.keras"
    for path, what in ((labels_path, "labels.json (the class order)"), (meta_path, "export.json (its input)"),
                       (model_path, "model.keras")):
        if not path.is_file():
            raise UserError(f"{folder} is not a videosweep export: it has no {what}")
    try:
        classes, meta = json.loads(labels_path.read_text()), json.loads(meta_path.read_text())
        contract = meta["input"]
    except (ValueError, KeyError) as err:
        raise UserError(f"{folder}: unreadable export metadata ({err})") from None
    model = keras.models.load_model(model_path, safe_mode=True)
    takes = tuple(model.input_shape[-3:-1])
    if takes != (contract.get("height"), contract.get("width")):
        raise UserError(f"{folder}: export.json says {contract.get('frame_size')} frames but model.keras takes "
                        f"{takes[1]}x{takes[0]}; re-export the model")
    if int(model.output_shape[-1]) != len(classes):
        raise UserError(f"{folder}: labels.json lists {len(classes)} classes but the model predicts "
                        f"{model.output_shape[-1]}")
    return Predictor(model, [str(c) for c in classes], contract, str(folder))


def _load_registered(uri: str, tracking_uri: str | None, workdir: Path | None = None) -> Predictor:
    """A registered (or run) model, loaded as the plain .keras file it holds, never through MLflow's loader:
    the artefact store is shared, and MLflow would unpickle custom objects planted beside the model."""
    import mlflow

    if tracking_uri is None:
        raise UserError(f"{uri} names a registered model: give --tracking-uri, or --sweep to use that sweep's store")
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="videosweep-model-") as download:
        try:
            location = _model_location(uri)  # resolved once: the files checked are the files copied
            _check_location(uri, location, local_artifact_root(tracking_uri, workdir))
            folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=download))
            meta = json.loads((mlflow.models.Model.load(str(folder)).metadata or {})["videosweep_export"])
        except KeyError:
            raise UserError(f"{uri} was not registered by `videosweep export` (no input contract)") from None
        except UserError:
            raise
        except Exception as err:  # noqa: BLE001 - MLflow raises many kinds for a missing model or alias
            raise UserError(f"cannot load {uri}: {mask_text(one_line(str(err)))[:200]}") from None
        model = _plain_keras_model(uri, folder)
    return Predictor(model, [str(c) for c in meta["classes"]], meta["input"], uri)


def local_artifact_root(tracking_uri: str, workdir: Path | None) -> Path | None:
    """Where an embedded (SQLite) store keeps its artefacts, as the tracker lays it out: `<workdir>/mlartifacts`,
    the workdir being the database's folder unless given; None for other stores (they serve their own)."""
    from runner.tracking.embedded_store import sqlite_path

    database = sqlite_path(tracking_uri)
    if database is None:
        return None
    return ((workdir or database.parent) / "mlartifacts").resolve()


def _model_location(uri: str) -> str:
    """Where the registry (or the run) says a model's files are: what MLflow would copy them from."""
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository
    from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

    location = uri
    for _ in range(3):  # a version's source may itself be a models:/ (logged model) or runs:/ URI
        if not location.startswith(("models:/", "runs:/")):
            return location
        repository = ModelsArtifactRepository if location.startswith("models:/") else RunsArtifactRepository
        location = str(repository.get_underlying_uri(location))
    raise UserError(f"{uri}: the registry's locations for it lead from one model URI to another")


def _check_location(uri: str, location: str, root: Path | None) -> None:
    """Refuse files the shared registry places on this machine outside the store's artefact root: a planted
    location would have us copy (and load) any local folder. Locations of another scheme are the store's own."""
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    parsed = urlparse(location)
    if parsed.scheme not in ("", "file"):
        return
    path = Path(url2pathname(parsed.path) if parsed.scheme else location).resolve()
    if root is None or not path.is_relative_to(root):
        where = f"the store's artefact root {root}" if root else "the store (it keeps no local artefacts)"
        raise UserError(f"{uri}: the registry places its files at {mask_text(location)[:200]}, outside {where}; "
                        "refusing to copy them")


FOREIGN_CODE = ("*.cloudpickle", "*.pkl", "*.pickle", "code/*", "*.py")  # what `videosweep export` never logs


def _plain_keras_model(uri: str, folder: Path) -> keras.Model:
    """The model's data/model.keras, loaded in Keras' safe mode; a model carrying code is refused."""
    import keras

    foreign = sorted(str(p.relative_to(folder)) for pattern in FOREIGN_CODE for p in folder.rglob(pattern))
    if foreign:
        raise UserError(f"{uri} carries code or pickled objects ({', '.join(foreign[:3])}); videosweep loads only "
                        "plain Keras models it exported: refusing to load it")
    path = folder / "data" / "model.keras"
    if not path.is_file():
        raise UserError(f"{uri} holds no data/model.keras (not a Keras model exported by videosweep)")
    try:
        return keras.models.load_model(path, safe_mode=True)
    except Exception as err:  # noqa: BLE001 - Keras refuses unsafe or foreign content with several kinds
        raise UserError(f"cannot load {uri}: {one_line(str(err))[:200]}") from None


def load_predictor(reference: str, export_trial: Callable[[str, Path], None] | None = None,
                   tracking_uri: str | None = None, workdir: Path | None = None) -> Predictor:
    """An export folder, a `models:/name@alias` URI, or a trial key (exported on the fly by `export_trial`);
    `workdir`: the sweep's, where an embedded store keeps its artefacts (default: beside its database)."""
    if reference.startswith(("models:/", "runs:/")):
        return _load_registered(reference, tracking_uri, workdir)
    folder = Path(reference).expanduser()
    if folder.is_dir():
        return _load_folder(folder)
    if export_trial is not None and "/" not in reference:
        # the model is loaded into memory, so the temporary export goes at once, also when exporting fails
        with tempfile.TemporaryDirectory(prefix="videosweep-export-") as staging:
            export_trial(reference, Path(staging) / "export")
            return _load_folder(Path(staging) / "export")
    raise UserError(f"model {reference} is neither an export folder, a models:/ URI nor a trial key "
                    "(a trial key needs --sweep)")


# ---------------------------------------------------------------- inputs


def frame_table(root: Path) -> pd.DataFrame:
    """video, frame, label, split, path of every frame: from labels.csv when present, else from the folders."""
    from zoo.data import IMAGE_SUFFIXES, load_dataset, natural_key

    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    if (root / "labels.csv").is_file():
        dataset = load_dataset(root)
        return dataset.labels.assign(path=[str(p) for p in dataset.frame_paths])
    rows = [{"video": folder.name, "frame": file.name, "label": "", "split": "", "path": str(file)}
            for folder in sorted(p for p in root.iterdir() if p.is_dir())
            for file in sorted((f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES),
                               key=lambda f: natural_key(f.name))]
    if not rows:
        raise DataError(f"{root} holds no <video>/<frame image> files")
    return pd.DataFrame(rows)


def _check_size(predictor: Predictor, frames: np.ndarray) -> None:
    expected = tuple(predictor.contract["shape"][-3:-1])
    if tuple(frames.shape[1:3]) != expected:
        raise UserError(f"frames of {frames.shape[2]}x{frames.shape[1]} do not fit a model expecting "
                        f"{predictor.contract['frame_size']}")


def predict_dataset(predictor: Predictor, root: Path, progress: Callable[[int], None] | None = None) -> pd.DataFrame:
    """Predictions for every frame of a frame-folder dataset, video by video."""
    from zoo.frames import read_frames

    table = frame_table(root)
    parts = []
    for _, rows in table.groupby("video", sort=False):
        frames = read_frames([Path(p) for p in rows.path], predictor.frame_size)
        _check_size(predictor, frames)
        parts.append(predictor.probabilities(frames))
        if progress is not None:
            progress(len(rows))
    return prediction_table(predictor, table.drop(columns="path"), np.concatenate(parts))


def predict_videos(predictor: Predictor, videos: Iterable[Path], fps: float,
                   progress: Callable[[int], None] | None = None) -> pd.DataFrame:
    """Predictions for frames sampled at `fps` from video files (frame names as extraction would write them)."""
    from zoo.frames import resize_rgb
    from zoo.video import sample_video

    tables, parts = [], []
    for path in videos:
        sampled = [(seconds, resize_rgb(image, predictor.frame_size)) for seconds, image in sample_video(path, fps)]
        frames = np.stack([image for _, image in sampled])
        name = Path(path).stem
        tables.append(pd.DataFrame({"video": name, "frame": [f"{name}-{i:05d}.jpg" for i in range(1, len(sampled) + 1)],
                                    "time_seconds": [round(s, 3) for s, _ in sampled], "label": "", "split": ""}))
        parts.append(predictor.probabilities(frames))
        if progress is not None:
            progress(1)
    return prediction_table(predictor, pd.concat(tables, ignore_index=True), np.concatenate(parts))


def prediction_table(predictor: Predictor, rows: pd.DataFrame, probabilities: np.ndarray) -> pd.DataFrame:
    """The research code's columns; empty prediction/error where no window ends or no label is known."""
    table = pd.DataFrame(probabilities, columns=predictor.classes)
    known = ~np.isnan(probabilities).any(axis=1)
    picked = np.where(known, probabilities.argmax(axis=1) if len(probabilities) else 0, 0)
    table["prediction"] = [predictor.classes[i] if ok else "" for i, ok in zip(picked, known)]
    for column in rows.columns:
        table[column] = rows[column].to_numpy()
    labelled = known & (rows["label"].to_numpy() != "")
    table["error"] = [str(int(p != label)) if ok else "" for p, label, ok in
                      zip(table["prediction"], rows["label"], labelled)]
    return table
