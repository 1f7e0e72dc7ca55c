"""Export: a trial's trained model as one self-contained Keras model on raw frames, with what ships beside it.

Frozen-feature architectures were trained on cached backbone features; the export joins the backbone (with
its preprocessing layers, same weights as extraction) and the trained head into one model, so a user never
needs the feature cache. Beside the model: labels.json, export.json (the input contract), model_card.md.
The model is registered in MLflow's model registry under the sweep's name with the alias `champion`.
"""

from __future__ import annotations

import json
import shlex
import tempfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from reports.best import baseline_check
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


@dataclass
class Shipped:
    """What the export folder holds, for its model card: where it lands, its files and their sizes, the shipped
    model's own parameter count (backbone included), and the baseline warning ("" when none is due)."""

    folder: Path
    files: dict[str, str]
    sizes: dict[str, int]
    param_count: int
    warning: str = ""
    link: str = ""  # the trial run's page on the tracking server, or how to open a local store


def baseline_warning(row: Any) -> str:
    """Why a trial does not beat the val majority baseline, in figures (for the refusal and the model card's first
    line); empty when it beats it or recorded no baseline to judge by (baseline_check)."""
    interval, beats = baseline_check(row)
    if beats is not False or interval is None:
        return ""
    val = from_entries(row)["val"]
    majority = f"{val['majority_accuracy']:.4f}" + (f" ({val['majority_class']})" if val["majority_class"] else "")
    return (f"its val accuracy "
            f"{float(row['val_accuracy_best']):.4f} has a 95% interval [{interval[0]:.4f}, {interval[1]:.4f}] over "
            f"{val['effective_units']:.3g} effective video(s), which does not clear the val majority baseline "
            f"{majority}")


def epochs_line(results: dict[str, Any], learning_rates: list[float], most: int) -> str:
    """One epoch count, said once: all epochs trained over every learning-rate round (results' fit_num_epochs), the
    rounds' own counts, and `epochs`, the most any one round may run."""
    rounds = [(rate, results.get(f"fit_stopped_epoch{index}")) for index, rate in enumerate(learning_rates, start=1)]
    shown = ", ".join(f"learning rate {rate:g}: {count}" for rate, count in rounds if count is not None)
    return (f"Trained {results.get('fit_num_epochs', '?')} epochs in all ({shown}; each round at most {most}, stopping "
            f"early after {results.get('patience', '?')} without improvement); the shipped weights are the best of "
            f"round {results.get('fit_best_round', '?')}.")


def usage_snippet(folder: Path, contract: dict[str, Any]) -> list[str]:
    """Python that applies the exported model to one folder of frames exactly as `videosweep predict` does (frames in
    natural name order, decoded and resized as export.json says) and prints one CSV row per frame with a window."""
    return ["```python", "# python this.py FRAMES_FOLDER  (needs keras, opencv-python, numpy)",
            "import json, re, sys", "from pathlib import Path", "", "import cv2, keras, numpy as np", "",
            f"export = Path({str(folder.resolve())!r})  # this export folder",
            'contract = json.loads((export / "export.json").read_text())["input"]',
            'classes = json.loads((export / "labels.json").read_text())',
            'model = keras.models.load_model(export / "model.keras")',
            'size, length = (contract["width"], contract["height"]), contract["sequence_length"]', "",
            "def read(path):  # RGB at `size`: large JPEGs decoded at 1/8, 1/4 or 1/2 scale, then INTER_AREA",
            "    image = cv2.imread(str(path))",
            "    for factor, flag in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),",
            "                         (2, cv2.IMREAD_REDUCED_COLOR_2)):",
            '        if path.suffix.lower() in (".jpg", ".jpeg") and image.shape[1] >= factor * size[0] \\',
            "                and image.shape[0] >= factor * size[1]:",
            "            image = cv2.imread(str(path), flag)",
            "            break",
            "    if (image.shape[1], image.shape[0]) != size:",
            "        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)",
            "    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)", "",
            'paths = sorted((p for p in Path(sys.argv[1]).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")),',
            '               key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\\d+)", p.name)])',
            'frames = np.stack([read(p) for p in paths]).astype("float32")  # values 0-255, as trained',
            "ends = range(length - 1, len(frames))  # a window belongs to its last frame",
            'inputs = np.stack([frames[end - length + 1:end + 1] for end in ends]) if contract["windowed"] else frames',
            "probabilities = model.predict(inputs, verbose=0)",
            'print("frame,prediction," + ",".join(classes))',
            "for end, row in zip(ends, probabilities):",
            '    print(f"{paths[end].name},{classes[row.argmax()]}," + ",".join(f"{p:.6f}" for p in row))', "```"]


def _size(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"


def model_card(trial: TrialArtifacts, sweep: str, contract: dict[str, Any], classes: list[str],
               shipped: Shipped) -> str:
    """model_card.md: what the model is, how well it does against the baselines, and how to call it; a model that
    does not beat the baseline says so in its first line."""
    results = trial.results
    metrics = [("validation accuracy", results.get("fit_val_acc")),
               ("test accuracy (held out)", results.get("fit_test_acc")),
               ("test loss (held out)", results.get("fit_test_loss")), ("best round", results.get("fit_best_round")),
               ("parameters (the exported model, backbone included)", f"{shipped.param_count:,}"),
               *((f"{file} size", _size(shipped.sizes[file])) for file in shipped.files.values())]
    lines = ([f"**This model does not beat the majority-class baseline** (exported with --allow-baseline): "
              f"{shipped.warning}.", ""] if shipped.warning else [])
    lines += [f"# {trial.spec.model.architecture} from sweep {sweep}", "",
              f"Trial `{trial.key}` (MLflow run `{trial.run_id}`), dataset fingerprint "
              f"`{results.get('data_fingerprint', '?')}`." + (
                  f" Reused from another sweep: trained in MLflow run `{trial.artefacts_run_id}`."
                  if trial.artefacts_run_id != trial.run_id else ""), *(["", shipped.link] if shipped.link else []),
              "", "## Metrics", "", "| metric | value |", "|---|---|"]
    lines += [f"| {name} | {value:.4f} |" if isinstance(value, float) else f"| {name} | {value} |"
              for name, value in metrics if value is not None]
    training = trial.spec.training
    lines += ["", epochs_line(results, list(training.learning_rates), training.epochs)]
    lines += baseline_section(results)
    lines += ["", "## Parameters", "", "| parameter | value |", "|---|---|"]
    used = used_parameters(trial.spec.model.architecture, trial.spec.model.sequence_model) | set(TRAINING_FIELDS)
    lines += [f"| {'epochs (at most, per round)' if k == 'epochs' else k} | {v} |"
              for k, v in trial.spec.flat().items() if v is not None and k in used]
    if trial.confusion is not None:
        lines += ["", "## Confusion matrix (test; rows true, columns predicted)", "",
                  "| true \\ predicted | " + " | ".join(map(str, trial.confusion.columns)) + " |",
                  "|---|" + "---|" * len(trial.confusion.columns)]
        lines += [f"| {index} | " + " | ".join(str(v) for v in row) + " |" for index, row in trial.confusion.iterrows()]
    lines += ["", "## Input", "", f"`{contract['shape']}` float32 RGB frames in [0, 255] of "
              f"{contract['frame_size']} (width x height); {contract['window_label']}.", "",
              f"Classes, in output order: {', '.join(classes)}.", "", "## Use", "",
              "Frames of a video, or video files sampled at a rate, to a frame prediction CSV:", "", "```",
              f"videosweep predict {shlex.quote(str(shipped.folder.resolve()))} --video clip.mp4 --fps 2 "
              "--out frame_predictions.csv", "```", "",
              "In Python, on one folder of frames (the same probabilities as `videosweep predict --data`):", "",
              *usage_snippet(shipped.folder, contract), ""]
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
                 register: bool = True, overwrite: bool = False, selection: dict[str, Any] | None = None,
                 allow_baseline: bool = False) -> dict[str, Any]:
    """Write the export folder atomically; register the model with alias `champion` when asked. `files`: the
    files the user's sweep file names (`Sweep.named_files`), the only ones the trial's backbone may load. A model
    whose val accuracy does not clear the majority baseline (baseline_check) is refused, nothing written, unless
    `allow_baseline`; then its model card says so first."""
    import keras

    row = find_trial(runs, key)
    warning = baseline_warning(row)
    if warning and not allow_baseline:
        raise UserError(f"trial {key} does not beat the majority-class baseline: {warning}; nothing exported "
                        "(--allow-baseline exports it anyway, its model card saying so)")
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
            "param_count": int(model.count_params()), "baseline": baseline_meta(row, warning),
            **({"selection": selection} if selection else {})}
    with atomic.atomic_dir(out, overwrite=overwrite, marker=atomic.EXPORT_MARKER, what="export folder") as staging:
        meta["files"] = _save_formats(model, staging, formats)
        shipped = Shipped(out, meta["files"], {file: _bytes(staging / file) for file in meta["files"].values()},
                          meta["param_count"], warning,
                          runs.run_link(trial.artefacts_run_id) or runs.link_hint())
        atomic.write_json(staging / "labels.json", classes)
        atomic.write_json(staging / "export.json", meta)
        atomic.write_text(staging / "model_card.md", model_card(trial, sweep, contract, classes, shipped))
    if register:
        meta["registered"] = register_champion(runs, trial.run_id, model, meta, out)
    return meta


def baseline_meta(row: Any, warning: str) -> dict[str, Any]:
    """export.json's record of the baseline decision (baseline_check): the interval, the baseline, the verdict."""
    interval, beats = baseline_check(row)
    val = from_entries(row).get("val", {})
    return {"beats_baseline": beats, "val_interval": interval, "val_majority_accuracy": val.get("majority_accuracy"),
            "val_majority_class": val.get("majority_class"), "exported_below_baseline": bool(warning)}


def _bytes(path: Path) -> int:
    """A file's size, or a folder's (a SavedModel): the sum of its files."""
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


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
