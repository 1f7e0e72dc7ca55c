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

from zoo.errors import DataError, UserError

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
    model = keras.models.load_model(model_path)
    takes = tuple(model.input_shape[-3:-1])
    if takes != (contract.get("height"), contract.get("width")):
        raise UserError(f"{folder}: export.json says {contract.get('frame_size')} frames but model.keras takes "
                        f"{takes[1]}x{takes[0]}; re-export the model")
    if int(model.output_shape[-1]) != len(classes):
        raise UserError(f"{folder}: labels.json lists {len(classes)} classes but the model predicts "
                        f"{model.output_shape[-1]}")
    return Predictor(model, [str(c) for c in classes], contract, str(folder))


def _load_registered(uri: str, tracking_uri: str | None) -> Predictor:
    import mlflow

    if tracking_uri is None:
        raise UserError(f"{uri} names a registered model: give --tracking-uri, or --sweep to use that sweep's store")
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        info = mlflow.models.get_model_info(uri)
        meta = json.loads((info.metadata or {})["videosweep_export"])
        model = (mlflow.keras if "keras" in (info.flavors or {}) else mlflow.tensorflow).load_model(uri)
    except KeyError:
        raise UserError(f"{uri} was not registered by `videosweep export` (no input contract)") from None
    except Exception as err:  # noqa: BLE001 - MLflow raises many kinds for a missing model or alias
        from zoo.errors import one_line

        raise UserError(f"cannot load {uri}: {one_line(str(err))[:200]}") from None
    return Predictor(model, [str(c) for c in meta["classes"]], meta["input"], uri)


def load_predictor(reference: str, export_trial: Callable[[str, Path], None] | None = None,
                   tracking_uri: str | None = None) -> Predictor:
    """An export folder, a `models:/name@alias` URI, or a trial key (exported on the fly by `export_trial`)."""
    if reference.startswith(("models:/", "runs:/")):
        return _load_registered(reference, tracking_uri)
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
