"""Export: a trial's trained model as one self-contained Keras model on raw frames, with what ships beside it.

Frozen-feature architectures were trained on cached backbone features; the export joins the backbone (with
its preprocessing layers, same weights as extraction) and the trained head into one model, so a user never
needs the feature cache. Beside the model: labels.json, export.json (the input contract), model_card.md.
The model is registered in MLflow's model registry under the sweep's name with the alias `champion`.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from reports.records import SweepRuns
from runner.spec.trial_spec import TRAINING_FIELDS, TrialSpec, unlisted_files
from zoo import atomic, deploy
from zoo.baselines import from_entries
from zoo.errors import UserError, one_line
from zoo.secrets import mask_text, mask_url
from zoo.spec import used_parameters
from zoo.stdio import quiet_stderr

if TYPE_CHECKING:  # pragma: no cover
    import keras

FORMATS = ("keras", "savedmodel", "tflite")
TENSORFLOW_FORMATS = ("savedmodel", "tflite")  # need TensorFlow whatever the Keras backend
EXPORT_VERSION = 1
CHAMPION = "champion"


@dataclass
class TrialArtifacts:
    """What export needs of one trial run, downloaded from MLflow."""

    key: str
    run_id: str
    artefacts_run_id: str  # the run its files came from: a reused trial's original, else run_id
    spec: TrialSpec
    results: dict[str, Any]
    model_path: Path
    confusion: pd.DataFrame | None


def find_trial(runs: SweepRuns, key: str) -> pd.Series:
    rows = runs.trials[runs.trials.trial_key == key]
    if rows.empty:
        raise UserError(f"sweep {runs.tracker.experiment_name} has no trial {key!r} in MLflow "
                        f"(`videosweep status` lists the trial keys)")
    row = rows.iloc[0]
    if row.status != "FINISHED":
        raise UserError(f"trial {key} did not finish (its run is {row.status}); nothing to export")
    return row


TRIAL_FILES = ("params.json", "results.json", "model_best.keras", "confusion_matrix.csv")
OPTIONAL_FILES = ("confusion_matrix.csv",)


def download_trial(runs: SweepRuns, row: pd.Series, folder: Path,
                   files: Collection[tuple[str, str]]) -> TrialArtifacts:
    """A trial's artefacts from MLflow. Missing ones are named as missing; the store failing us (auth,
    network, a server error) is named as that, never taken for a missing artefact. Its parameters are checked
    (`stored_spec`) against its key and against `files`, the files the user's sweep file names."""
    client = runs.tracker.client
    where = f"the artefact store of {mask_url(runs.tracker.uri)}"
    run_id = row.artefacts_run_id  # a trial reused from another sweep: its original run's
    try:
        present = {Path(item.path).name for item in client.list_artifacts(run_id, "trial")}
    except Exception as err:  # noqa: BLE001 - MLflow raises several kinds; all mean the store failed us
        raise UserError(f"cannot list trial {row.trial_key}'s artefacts in {where}: "
                        f"{mask_text(one_line(str(err)))[:200]}") from None
    fetched: dict[str, Path] = {}
    for name in TRIAL_FILES:
        if name not in present:
            if name in OPTIONAL_FILES:
                continue
            raise UserError(f"trial {row.trial_key}'s run {run_id} has no artefact trial/{name}")
        try:
            fetched[name] = Path(client.download_artifacts(run_id, f"trial/{name}", str(folder)))
        except Exception as err:  # noqa: BLE001 - listed, so the store failed us while downloading it
            raise UserError(f"cannot download trial/{name} of trial {row.trial_key} from {where}: "
                            f"{mask_text(one_line(str(err)))[:200]}") from None
    results = _json_object(fetched["results.json"], row.trial_key)
    spec = stored_spec(_json_object(fetched["params.json"], row.trial_key), row.trial_key,
                       results.get("data_fingerprint"), files)
    confusion = pd.read_csv(fetched["confusion_matrix.csv"], index_col=0) if "confusion_matrix.csv" in fetched else None
    return TrialArtifacts(row.trial_key, row.run_id, run_id, spec, results, fetched["model_best.keras"], confusion)


def _json_object(path: Path, key: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"trial {key}'s {path.name} in the artefact store is unreadable ({type(err).__name__})") \
            from None
    if not isinstance(value, dict):
        raise UserError(f"trial {key}'s {path.name} in the artefact store is not a JSON object")
    return value


def stored_spec(params: dict[str, Any], key: str, fingerprint: Any, files: Collection[tuple[str, str]]) -> TrialSpec:
    """A trial's spec from its params.json, read back from the shared store: only if its parameters make its key
    on the data it records, and load no file that the user's sweep file does not name (`Sweep.named_files`)."""
    where = f"trial {key}'s params.json: "
    spec = TrialSpec.from_flat({name: value for name, value in params.items() if name != "data_root"}, where)
    if not isinstance(fingerprint, str) or spec.key(fingerprint) != key:
        raise UserError(f"{where}these are not the parameters of trial {key} (they make another key on the data "
                        "it records); refusing them")
    unlisted = unlisted_files(spec, files)
    if unlisted:
        raise UserError(f"{where}it would load {unlisted[0][:200]}, a file your sweep file does not name; files to "
                        "load are taken from your sweep file only")
    return spec


def is_windowed(spec: TrialSpec) -> bool:
    return deploy.is_windowed(spec.model)


def deployable_model(spec: TrialSpec, trained: keras.Model) -> keras.Model:
    """The trained model if it already takes frames; else backbone (+TimeDistributed) joined to the head."""
    return deploy.join_backbone(spec.model, trained)


def input_contract(spec: TrialSpec, model: keras.Model) -> dict[str, Any]:
    width, height = spec.model.frame_size or (0, 0)
    windowed = is_windowed(spec)
    return {
        "shape": [None if d is None else int(d) for d in model.input_shape],
        "frame_size": f"{width}x{height}", "width": width, "height": height,
        "sequence_length": spec.model.sequence_length if windowed else 1, "windowed": windowed,
        "channel_order": "RGB", "dtype": "float32", "value_range": [0, 255],
        "resize": "OpenCV INTER_AREA from the decoded frame (JPEGs may be decoded at a reduced scale first)",
        "window_label": "a window's prediction belongs to its last frame; the first sequence_length-1 frames "
                        "of a video have none",
    }


def baseline_section(results: dict[str, Any]) -> list[str]:
    """The model card's baselines: what always answering the majority class scores on the trial's own windows,
    and the model's margin over it."""
    baselines = from_entries(results)
    if not baselines:
        return ["", "## Baselines", "", "Not recorded (a trial of an older videosweep)."]
    accuracy = {"train": results.get("fit_train_acc"), "val": results.get("fit_val_acc"),
                "test": results.get("fit_test_acc")}
    lines = ["", "## Baselines", "", f"Chance (1 / {len(results.get('classes') or []) or '?'} classes): "
             f"{next(iter(baselines.values()))['chance']:.4f}.", "",
             "| split | majority class | majority-class accuracy | model accuracy | margin |", "|---|---|---|---|---|"]
    for split, baseline in baselines.items():
        model = accuracy.get(split)
        margin = f"{model - baseline['majority_accuracy']:+.4f}" if isinstance(model, (int, float)) else ""
        shown = f"{model:.4f}" if isinstance(model, (int, float)) else ""
        lines.append(f"| {split}{' (held out)' if split == 'test' else ''} | {baseline['majority_class'] or ''} | "
                     f"{baseline['majority_accuracy']:.4f} | {shown} | {margin} |")
    return lines


def model_card(trial: TrialArtifacts, sweep: str, contract: dict[str, Any], classes: list[str]) -> str:
    results = trial.results
    metrics = [("validation accuracy", results.get("fit_val_acc")),
               ("test accuracy (held out)", results.get("fit_test_acc")),
               ("test loss (held out)", results.get("fit_test_loss")), ("parameters", results.get("model_param_count")),
               ("best round", results.get("fit_best_round")), ("epochs", results.get("fit_num_epochs"))]
    lines = [f"# {trial.spec.model.architecture} from sweep {sweep}", "",
             f"Trial `{trial.key}` (MLflow run `{trial.run_id}`), dataset fingerprint "
             f"`{results.get('data_fingerprint', '?')}`." + (
                 f" Reused from another sweep: trained in MLflow run `{trial.artefacts_run_id}`."
                 if trial.artefacts_run_id != trial.run_id else ""), "", "## Metrics", "", "| metric | value |", "|---|---|"]
    lines += [f"| {name} | {value:.4f} |" if isinstance(value, float) else f"| {name} | {value} |"
              for name, value in metrics if value is not None]
    lines += baseline_section(results)
    lines += ["", "## Parameters", "", "| parameter | value |", "|---|---|"]
    used = used_parameters(trial.spec.model.architecture, trial.spec.model.sequence_model) | set(TRAINING_FIELDS)
    lines += [f"| {k} | {v} |" for k, v in trial.spec.flat().items() if v is not None and k in used]
    if trial.confusion is not None:
        lines += ["", "## Confusion matrix (test; rows true, columns predicted)", "",
                  "| true \\ predicted | " + " | ".join(map(str, trial.confusion.columns)) + " |",
                  "|---|" + "---|" * len(trial.confusion.columns)]
        lines += [f"| {index} | " + " | ".join(str(v) for v in row) + " |" for index, row in trial.confusion.iterrows()]
    lines += ["", "## Input", "", f"`{contract['shape']}` float32 RGB frames in [0, 255] of "
              f"{contract['frame_size']} (width x height); {contract['window_label']}.", "",
              f"Classes, in output order: {', '.join(classes)}.", "", "## Use", "", "```",
              "videosweep predict THIS_FOLDER --video clip.mp4 --fps 2 --out frame_predictions.csv",
              "python -c \"import keras; m = keras.models.load_model('model.keras')\"", "```", ""]
    return "\n".join(lines)


def _save_formats(model: keras.Model, folder: Path, formats: list[str]) -> dict[str, str]:
    files = {}
    if "keras" in formats:
        model.save(folder / "model.keras")
        files["keras"] = "model.keras"
    if "savedmodel" in formats or "tflite" in formats:
        with quiet_stderr():  # TensorFlow's C++ start-up lines bypass TF_CPP_MIN_LOG_LEVEL here
            model.export(str(folder / "savedmodel"), format="tf_saved_model", verbose=False)
        files["savedmodel"] = "savedmodel"
    if "tflite" in formats:
        import tensorflow as tf

        converter = tf.lite.TFLiteConverter.from_saved_model(str(folder / "savedmodel"))
        # Recurrent layers need TensorFlow ops beyond the TFLite built-ins.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
        with quiet_stderr():  # the converter's C++ logging bypasses TF_CPP_MIN_LOG_LEVEL
            (folder / "model.tflite").write_bytes(converter.convert())
        files["tflite"] = "model.tflite"
        if "savedmodel" not in formats:
            import shutil

            shutil.rmtree(folder / "savedmodel")
            files.pop("savedmodel")
    return files


def parse_formats(text: str) -> list[str]:
    formats = [f.strip().lower() for f in text.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise UserError(f"unknown export format(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(FORMATS)}")
    from runner import backends

    needs_tf = [f for f in formats if f in TENSORFLOW_FORMATS]
    if needs_tf and not backends.installed("tensorflow"):
        raise UserError(f"--format {', '.join(needs_tf)} needs TensorFlow, which is not installed here: "
                        "pip install 'videosweep[cpu]' (or [gpu]), or export --format keras")
    return formats


def export_trial(runs: SweepRuns, key: str, out: Path, formats: list[str], files: Collection[tuple[str, str]],
                 register: bool = True, overwrite: bool = False,
                 selection: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the export folder atomically; register the model with alias `champion` when asked. `files`: the
    files the user's sweep file names (`Sweep.named_files`), the only ones the trial's backbone may load."""
    import keras

    row = find_trial(runs, key)
    atomic.check_replaceable(out, overwrite, atomic.EXPORT_MARKER, "export folder")
    sweep = runs.tracker.experiment_name
    with tempfile.TemporaryDirectory() as download:
        trial = download_trial(runs, row, Path(download), files)
        model = deployable_model(trial.spec, keras.models.load_model(trial.model_path, safe_mode=True))
    classes = list(trial.results.get("classes") or [])
    contract = input_contract(trial.spec, model)
    meta = {"format_version": EXPORT_VERSION, "sweep": sweep, "trial_key": key, "run_id": trial.run_id,
            "artefacts_run_id": trial.artefacts_run_id,
            "architecture": trial.spec.model.architecture, "classes": classes, "input": contract,
            "params": trial.spec.flat(), "data_fingerprint": trial.results.get("data_fingerprint"),
            **({"selection": selection} if selection else {})}
    with atomic.atomic_dir(out, overwrite=overwrite, marker=atomic.EXPORT_MARKER, what="export folder") as staging:
        meta["files"] = _save_formats(model, staging, formats)
        atomic.write_json(staging / "labels.json", classes)
        atomic.write_json(staging / "export.json", meta)
        atomic.write_text(staging / "model_card.md", model_card(trial, sweep, contract, classes))
    if register:
        meta["registered"] = register_champion(runs, trial.run_id, model, meta, out)
    return meta


def register_champion(runs: SweepRuns, run_id: str, model: keras.Model, meta: dict[str, Any],
                      folder: Path) -> str:
    """Log the deployable model to the trial's run, register it under the sweep's name, alias `champion`."""
    tracker = runs.tracker
    name = tracker.experiment_name
    info = tracker.log_model(run_id, model, name="export", metadata={"videosweep_export": json.dumps(meta)})
    tracker.log_files(run_id, [folder / file for file in ("labels.json", "export.json", "model_card.md")],
                      "export_files")
    version = tracker.register_version(run_id, info.model_uri, info.model_id, CHAMPION,
                                       {"trial_key": meta["trial_key"]})
    return f"models:/{name}@{CHAMPION} (version {version})"
