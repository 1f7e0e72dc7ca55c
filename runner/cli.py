"""The `videosweep` command line: side effects live here; every user error becomes one line and exit 2."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from runner.data_cli import data_app
from zoo.errors import UserError, one_line

app = typer.Typer(
    name="videosweep",
    help="Experiment sweeps over a zoo of video-classification models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(data_app, name="data")
console = Console(stderr=False, soft_wrap=True)
err_console = Console(stderr=True)
DEBUG = {"on": False}


@app.callback()
def _global(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False) -> None:
    DEBUG["on"] = debug or os.environ.get("VIDEOSWEEP_DEBUG") == "1"


def quiet_tensorflow(load: bool = False) -> None:
    """TensorFlow's C++ start-up chatter hides the lines users need; keep warnings and errors."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if load:
        from zoo.stdio import import_tensorflow

        import_tensorflow()


@app.command("zoo")
def zoo_command() -> None:
    """List the architectures and backbones the zoo can build."""
    import zoo

    table = Table(title="Architectures", show_lines=False)
    for column in ("name", "input", "parameters", "description"):
        table.add_column(column)
    for name in zoo.list_architectures():
        arch = zoo.get_architecture(name)
        params = ", ".join(sorted(arch.uses - {"architecture"}))
        table.add_row(name, arch.inputs, params, arch.description)
    console.print(table)
    backbones = Table(title="Backbones")
    for column in ("name", "native size", "min size", "features", "aliases"):
        backbones.add_column(column)
    for name in zoo.list_backbones():
        b = zoo.get_backbone(name)
        backbones.add_row(name, str(b.native_size), str(b.min_size), str(b.num_features), ", ".join(b.aliases))
    console.print(backbones)


@app.command()
def train(
    data: Annotated[Path, typer.Option(help="Dataset folder: <video>/<frames> plus labels.csv.")],
    out: Annotated[Path, typer.Option(help="Folder for the trial's artefacts (written atomically).")],
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Parameter as key=value; repeatable.")] = None,
    config: Annotated[Optional[Path], typer.Option(help="YAML file of parameters (--set wins).")] = None,
    labels: Annotated[Optional[Path], typer.Option(help="labels.csv if not inside --data.")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Frame/feature cache (default ~/.cache/videosweep).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --out.")] = False,
) -> None:
    """Train one model on a dataset and write params, results, history, confusion matrices and the model."""
    from runner.spec import TrialSpec, parse_assignments, read_yaml_mapping
    from zoo import atomic, load_dataset, validated_spec

    params: dict[str, Any] = read_yaml_mapping(config, "config file") if config else {}
    params.update(parse_assignments(set_ or []))
    spec = TrialSpec.from_flat(params)
    validated_spec(spec.model)  # invalid combinations and missing weights fail before any data is read
    dataset = load_dataset(data, labels, cache_dir)
    atomic.check_replaceable(out, overwrite, atomic.TRIAL_MARKER)

    quiet_tensorflow(load=True)
    from runner.trial import run_trial

    def show_epoch(step: int, row: dict[str, Any]) -> None:
        console.print(
            f"round {row['round']} epoch {row['epoch']:>3}  lr {row['learning_rate']:.0e}  "
            f"loss {row['loss']:.4f}  acc {row['accuracy']:.3f}  "
            f"val_loss {row['val_loss']:.4f}  val_acc {row['val_accuracy']:.3f}  ({row['seconds']:.1f}s)"
        )

    console.print(f"[bold]training[/] {spec.model.architecture} on {dataset.name} "
                  f"({len(dataset.labels)} frames, classes: {', '.join(dataset.classes)})")
    results = run_trial(spec, dataset, out, cache_dir=cache_dir, on_epoch=show_epoch, overwrite=overwrite)
    console.print(
        f"[green]done[/]: best round {results['fit_best_round']}, val_acc {results['fit_val_acc']:.3f}, "
        f"test_acc {results['fit_test_acc']:.3f}; artefacts in {out}"
    )


SweepArg = Annotated[Path, typer.Argument(help="Sweep file (YAML).")]
WorkdirOpt = Annotated[Optional[Path], typer.Option(help="Sweep folder (default ./runs/<sweep name>).")]
StorageOpt = Annotated[Optional[str], typer.Option(
    envvar="VIDEOSWEEP_STORAGE", help="Optuna storage URL (default sqlite in the workdir); passwords belong in "
    "PGPASSWORD or ~/.pgpass, not in the URL.")]


@app.command()
def schema() -> None:
    """Print the sweep file's JSON schema."""
    import json

    from runner.sweep import Sweep

    console.print_json(json.dumps(Sweep.model_json_schema()))


@app.command()
def plan(
    sweep_file: SweepArg,
    workdir: WorkdirOpt = None,
    storage: StorageOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="List every dropped combination.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Dry run: trials per sub-space, dropped combinations by reason, study progress, shared extractions."""
    import json

    from runner.expand import cache_sizes, expand_grid, shared_extractions
    from runner.run import load_context
    from runner.study import mask_url, trials_by_key

    ctx = load_context(sweep_file, workdir, storage, create_workdir=False)
    grid = ctx.sweep.search.strategy == "grid"
    expansion = expand_grid(ctx.sweep, ctx.dataset.fingerprint) if grid else None
    states: dict[str, int] = {"finished": 0, "failed": 0, "pending": 0, "running": 0}
    study = ctx.open_study(create=False) if (ctx.workdir / "optuna.db").exists() or storage else None
    if study is not None:
        by_key = trials_by_key(study)
        wanted = expansion.keys if expansion else list(by_key)
        for key in wanted:
            names = {t.state.name for t in by_key.get(key, [])}
            bucket = ("finished" if "COMPLETE" in names else "running" if "RUNNING" in names
                      else "failed" if names and names <= {"FAIL"} else "pending")
            states[bucket] += 1
    elif expansion:
        states["pending"] = len(expansion.keys)
    report: dict[str, Any] = {
        "sweep": ctx.sweep.name, "strategy": ctx.sweep.search.strategy, "storage": mask_url(ctx.storage_url),
        "data": ctx.dataset.summary(), "states": states,
    }
    if expansion is not None:
        report.update(
            trials=len(expansion.trials), per_subspace=expansion.per_subspace, combinations=expansion.combinations,
            duplicates=expansion.duplicates, dropped=dict(expansion.dropped),
            feature_extractions=dict(shared_extractions(expansion.trials)),
            cache_bytes=cache_sizes(expansion.trials, len(ctx.dataset.labels)),
        )
        if verbose:
            report["dropped_combinations"] = [{"params": p, "reason": r} for p, r in expansion.dropped_examples]
    else:
        report.update(trials=ctx.sweep.search.trials, per_subspace=None)
    if as_json:
        print(json.dumps(report, indent=2, default=str))
        return
    console.print(f"[bold]{ctx.sweep.name}[/]: {ctx.sweep.search.strategy} search on {ctx.dataset.name} "
                  f"({len(ctx.dataset.labels)} frames); study {report['storage']}")
    if expansion is None:
        console.print(f"budget: {ctx.sweep.search.trials} trials (sampler {ctx.sweep.search.sampler}, "
                      f"pruner {ctx.sweep.search.pruner})")
    else:
        table = Table(title=f"{len(expansion.trials)} trials from {expansion.combinations} combinations")
        table.add_column("sub-space")
        table.add_column("architecture")
        table.add_column("trials", justify="right")
        for index, (sub, count) in enumerate(zip(ctx.sweep.space, expansion.per_subspace)):
            table.add_row(str(index), ", ".join(map(str, sub["architecture"])), str(count))
        console.print(table)
        if expansion.duplicates:
            console.print(f"{expansion.duplicates} duplicate(s) after canonicalisation removed")
        for reason, count in expansion.dropped.most_common():
            console.print(f"dropped {count}: {reason}")
        if verbose:
            for params, reason in expansion.dropped_examples:
                console.print(f"  {params} -> {reason}")
        for extraction, users in sorted(shared_extractions(expansion.trials).items()):
            console.print(f"feature extraction {extraction}: shared by {users} trial(s)")
        for entry, size in sorted(report["cache_bytes"].items()):
            console.print(f"cache {entry}: {size / 2**20:,.1f} MiB")
    console.print("study: " + ", ".join(f"{v} {k}" for k, v in states.items()))


GpusOpt = Annotated[Optional[str], typer.Option(help="auto | none | 0,1,3 (default: the sweep's resources).")]
IntOpt = Optional[int]


@app.command()
def run(
    sweep_file: SweepArg,
    workdir: WorkdirOpt = None,
    storage: StorageOpt = None,
    gpus: GpusOpt = None,
    trials_per_gpu: Annotated[IntOpt, typer.Option(help="Concurrent trials per GPU.")] = None,
    workers: Annotated[IntOpt, typer.Option(help="CPU slots when no GPU is used.")] = None,
    max_retries: Annotated[IntOpt, typer.Option(help="Retries of a failed trial (default 1).")] = None,
    trial_timeout: Annotated[Optional[float], typer.Option(help="Kill a trial after this many seconds.")] = None,
    trials_per_process: Annotated[IntOpt, typer.Option(help="Recycle a worker after this many trials.")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Frame/feature cache.")] = None,
    memory_limit: Annotated[Optional[float], typer.Option(help="Recycle a worker past this many MiB.")] = None,
    retry_failed: Annotated[bool, typer.Option(help="Run failed trials again even if their retries are used up.")
                            ] = False,
    tracking_uri: Annotated[Optional[str], typer.Option(
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, the sweep's tracking.uri, sqlite in the workdir).")
    ] = None,
) -> None:
    """Run a sweep (again: only what has not finished runs)."""
    from runner.run import load_context, run_sweep

    ctx = load_context(sweep_file, workdir, storage, create_workdir=False, tracking_uri=tracking_uri)
    run_sweep(ctx, console, gpus=gpus, trials_per_gpu=trials_per_gpu, workers=workers, max_retries=max_retries,
              trial_timeout=trial_timeout, trials_per_process=trials_per_process,
              cache_dir=str(cache_dir) if cache_dir else None, memory_limit_mb=memory_limit,
              retry_failed=retry_failed)


app.command("resume", help="Finish an interrupted sweep: abandoned trials run again, finished ones never do.")(run)


@app.command()
def worker(
    sweep_file: Annotated[Optional[Path], typer.Argument(help="Sweep file (or join by --study).")] = None,
    storage: Annotated[Optional[str], typer.Option(envvar="VIDEOSWEEP_STORAGE",
                                                   help="The shared study's URL, e.g. postgresql://user@host/db.")
                       ] = None,
    study: Annotated[Optional[str], typer.Option(help="Join this study by name (its sweep file is in it).")
                     ] = None,
    data: Annotated[Optional[Path], typer.Option(help="This machine's copy of the dataset, if elsewhere.")] = None,
    workdir: WorkdirOpt = None,
    gpus: GpusOpt = None,
    trials_per_gpu: Annotated[IntOpt, typer.Option(help="Concurrent trials per GPU.")] = None,
    workers: Annotated[IntOpt, typer.Option(help="CPU slots when no GPU is used.")] = None,
    max_retries: Annotated[IntOpt, typer.Option(help="Retries of a failed trial (default 1).")] = None,
    trial_timeout: Annotated[Optional[float], typer.Option(help="Kill a trial after this many seconds.")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Frame/feature cache (per machine).")] = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Join a sweep from this machine: take trials from the shared study until none are left."""
    import os as _os

    from runner.run import load_context, run_sweep, sweep_from_study

    if storage is None:
        raise UserError("a worker needs the shared study: --storage postgresql://... (and a sweep file or --study)")
    if sweep_file is None and study is None:
        raise UserError("give the sweep file or --study NAME to join")
    sweep = sweep_from_study(storage, study) if sweep_file is None else None
    if sweep is not None and not (tracking_uri or _os.environ.get("MLFLOW_TRACKING_URI") or sweep.tracking.uri):
        from runner import study as studies

        found = studies.existing_study(sweep.name, studies.open_storage(storage))
        tracking_uri = found.user_attrs.get("tracking_uri") if found is not None else None
    ctx = load_context(sweep_file or Path(f"<study {study}>"), workdir, storage, create_workdir=False,
                       tracking_uri=tracking_uri, sweep=sweep, data_root=data)
    run_sweep(ctx, console, gpus=gpus, trials_per_gpu=trials_per_gpu, workers=workers, max_retries=max_retries,
              trial_timeout=trial_timeout, cache_dir=str(cache_dir) if cache_dir else None)


@app.command()
def status(sweep_file: SweepArg, workdir: WorkdirOpt = None, storage: StorageOpt = None) -> None:
    """A table of the sweep's trials (key, state, metric, duration) and totals."""
    from runner.run import load_context
    from runner.study import KEY, state_counts

    ctx = load_context(sweep_file, workdir, storage, create_workdir=False)
    study = ctx.open_study(create=False) if (ctx.workdir / "optuna.db").exists() or storage else None
    if study is None:
        raise UserError(f"sweep {ctx.sweep.name} has not been run yet (no study in {ctx.workdir})")
    table = Table(title=f"{ctx.sweep.name}")
    for column in ("#", "key", "architecture", "state", ctx.sweep.search.metric, "seconds", "note"):
        table.add_column(column)
    for trial in study.get_trials(deepcopy=False):
        if trial.user_attrs.get("invalid_reason"):
            continue
        params = trial.user_attrs.get("params", {})
        seconds = trial.duration.total_seconds() if trial.duration else None
        note = trial.user_attrs.get("failure") or trial.user_attrs.get("pruned") or ""
        table.add_row(str(trial.number), str(trial.user_attrs.get(KEY, "")), str(params.get("architecture", "")),
                      trial.state.name.lower(), "" if trial.value is None else f"{trial.value:.4f}",
                      "" if seconds is None else f"{seconds:.1f}", note[:80])
    console.print(table)
    console.print(", ".join(f"{v} {k}" for k, v in state_counts(study).items() if v))


@app.command()
def ui(
    sweep_file: SweepArg,
    workdir: WorkdirOpt = None,
    tracking_uri: Annotated[Optional[str], typer.Option(help="MLflow tracking URI (default as for run).")] = None,
    port: Annotated[int, typer.Option(help="Port of the MLflow UI.")] = 5000,
    host: Annotated[str, typer.Option(help="Address to bind; anything but 127.0.0.1 exposes your runs.")] = "127.0.0.1",
) -> None:
    """Start the MLflow UI on the sweep's tracking store, opened on its experiment."""
    import subprocess

    from runner.run import load_context
    from runner.tracking import Tracker

    ctx = load_context(sweep_file, workdir, None, create_workdir=False, tracking_uri=tracking_uri)
    if ctx.tracking_uri.startswith(("http://", "https://")):
        console.print(f"{ctx.sweep.name} is tracked on a server: open {ctx.tracking_uri}")
        return
    if not (ctx.workdir / "mlflow.db").exists() and ctx.tracking_uri.startswith("sqlite"):
        raise UserError(f"sweep {ctx.sweep.name} has not been run yet (no MLflow store in {ctx.workdir})")
    experiment = Tracker(ctx.tracking_uri, ctx.workdir, ctx.sweep.name).experiment_id
    if host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(f"[yellow]warning:[/] binding to {host} lets anyone who can reach it read your runs")
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/#/experiments/{experiment}/runs"
    console.print(f"MLflow UI for {ctx.sweep.name}: {url}  (Ctrl-C stops it)")
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", ctx.tracking_uri,
               "--host", host, "--port", str(port)]
    if ctx.tracking_uri.startswith("sqlite"):
        command += ["--default-artifact-root", (ctx.workdir / "mlartifacts").resolve().as_uri()]
    try:
        subprocess.run(command, check=False)
    except KeyboardInterrupt:
        pass


TrackingOpt = Annotated[Optional[str], typer.Option(help="MLflow tracking URI (default as for run).")]
MetricOpt = Annotated[Optional[str], typer.Option(help="Rank by this metric (default: the sweep's).")]


def _sweep_runs(sweep_file: Path, workdir: Path | None, tracking_uri: str | None) -> tuple[Any, Path, Any]:
    from reports.records import open_sweep_runs
    from runner.run import load_tracking_only

    sweep, workdir, uri = load_tracking_only(sweep_file, workdir, tracking_uri)
    return sweep, workdir, open_sweep_runs(uri, workdir, sweep.name)


@app.command()
def report(
    sweep_file: SweepArg,
    out: Annotated[Optional[Path], typer.Option(help="Report folder (default <workdir>/report).")] = None,
    metric: MetricOpt = None,
    top: Annotated[int, typer.Option(help="Learning curves of this many best trials.")] = 5,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --out written by report.")] = False,
    workdir: WorkdirOpt = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Leaderboard (CSV, Markdown) and one self-contained report.html, rebuilt from what MLflow holds."""
    from reports.report import build_report

    sweep, workdir, runs = _sweep_runs(sweep_file, workdir, tracking_uri)
    # the default folder is the sweep's own, rebuilt each time; a folder the user names needs --overwrite
    summary = build_report(runs, out or workdir / "report", metric or sweep.search.metric, top_k=top,
                           overwrite=overwrite or out is None)
    best = summary["best"]
    console.print(f"{summary['finished']} finished of {summary['trials']} trials ranked; best: "
                  f"{best['trial_key'] if best else '-'}")
    folder = Path(summary["out"])
    console.print(f"report: {folder / 'report.html'}  leaderboard: {folder / 'leaderboard.md'}")


@app.command()
def best(
    sweep_file: SweepArg,
    metric: MetricOpt = None,
    workdir: WorkdirOpt = None,
    tracking_uri: TrackingOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """The best finished trial: key, MLflow run id, metric and parameters."""
    import json

    import zoo
    from reports.records import MODEL_PARAMS, metric_column, rank_trials

    sweep, _, runs = _sweep_runs(sweep_file, workdir, tracking_uri)
    metric = metric or sweep.search.metric
    ranked = rank_trials(runs.trials, metric)
    if ranked.empty:
        raise UserError(f"sweep {sweep.name} has no finished trial yet")
    row = ranked.iloc[0]
    uses = zoo.get_architecture(str(row.architecture)).uses
    params = {k: row[k] for k in MODEL_PARAMS if k in uses and row[k] is not None and row[k] == row[k]}
    result = {"trial_key": row.trial_key, "run_id": row.run_id, "metric": metric,
              "value": float(row[metric_column(metric)[0]]), "test_accuracy": float(row.test_accuracy),
              "params": params}
    if as_json:
        print(json.dumps(result, indent=2, default=str))
        return
    console.print(f"[bold]{result['trial_key']}[/] {metric} {result['value']:.4f} (test accuracy "
                  f"{result['test_accuracy']:.4f}), MLflow run {result['run_id']}")
    console.print(", ".join(f"{k}={v}" for k, v in params.items()))


@app.command()
def export(
    sweep_file: SweepArg,
    out: Annotated[Path, typer.Option(help="Export folder (written atomically).")],
    trial: Annotated[Optional[str], typer.Option(help="Trial key (default: the best trial).")] = None,
    format_: Annotated[str, typer.Option("--format", help="Comma-separated: keras, savedmodel, tflite.")] = "keras",
    metric: MetricOpt = None,
    register: Annotated[bool, typer.Option(help="Register in MLflow's model registry with alias champion.")] = True,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --out.")] = False,
    workdir: WorkdirOpt = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """A self-contained model on raw frames with labels.json, export.json and model_card.md."""
    from reports.export import export_trial, parse_formats
    from reports.records import rank_trials

    formats = parse_formats(format_)
    quiet_tensorflow(load=True)
    sweep, _, runs = _sweep_runs(sweep_file, workdir, tracking_uri)
    if trial is None:
        ranked = rank_trials(runs.trials, metric or sweep.search.metric)
        if ranked.empty:
            raise UserError(f"sweep {sweep.name} has no finished trial to export")
        trial = str(ranked.iloc[0].trial_key)
    meta = export_trial(runs, trial, out, formats, register=register, overwrite=overwrite)
    console.print(f"exported {meta['architecture']} trial {trial} to {out} ({', '.join(meta['files'].values())}); "
                  f"input {meta['input']['shape']} RGB 0-255")
    if meta.get("registered"):
        console.print(f"registered as {meta['registered']}")


@app.command()
def predict(
    model: Annotated[str, typer.Argument(help="Export folder, models:/NAME@champion, or a trial key (with --sweep).")],
    out: Annotated[Path, typer.Option(help="Frame prediction CSV to write.")],
    data: Annotated[Optional[Path], typer.Option(help="Dataset folder of <video>/<frames> (labels.csv optional).")
                    ] = None,
    video: Annotated[Optional[list[Path]], typer.Option(help="Video file; repeatable.")] = None,
    fps: Annotated[float, typer.Option(help="Frames per second sampled from --video files.")] = 2.0,
    sweep: Annotated[Optional[Path], typer.Option(help="Sweep file, when MODEL is a trial key.")] = None,
    workdir: WorkdirOpt = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Predict every frame (windows end at it) of a dataset or of video files; write the frame prediction CSV."""
    from reports.predict import load_predictor, predict_dataset, predict_videos
    from zoo import atomic

    if (data is None) == (not video):
        raise UserError("give either --data DATASET or --video FILE (one or more), not both")
    exporter = None
    registry = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if sweep is not None:
        from reports.export import export_trial
        from runner.run import load_tracking_only

        registry = load_tracking_only(sweep, workdir, tracking_uri)[2]

        def exporter(key: str, folder: Path) -> None:
            _, _, runs = _sweep_runs(sweep, workdir, tracking_uri)
            export_trial(runs, key, folder, ["keras"], register=False)

    quiet_tensorflow(load=True)
    predictor = load_predictor(model, exporter, registry)
    table = predict_dataset(predictor, data) if data is not None else predict_videos(predictor, video or [], fps)
    atomic.write_text(out, table.to_csv(index=False))
    predicted = table.prediction.astype(bool).sum()
    errors = (table.error == "1").sum()
    labelled = (table.error != "").sum()
    accuracy = f", accuracy {1 - errors / labelled:.3f} on {labelled} labelled frames" if labelled else ""
    console.print(f"{predicted} of {len(table)} frames predicted{accuracy}; wrote {out}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app; user errors -> one line on stderr, exit 2 (traceback only with --debug)."""
    quiet_tensorflow()
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or os.environ.get("VIDEOSWEEP_DEBUG") == "1"
    try:
        app(args=args, standalone_mode=False)
    except UserError as err:
        if debug:
            traceback.print_exc()
        err_console.print(f"[red]error:[/] {one_line(str(err))}", highlight=False, soft_wrap=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as err:  # click's usage errors carry their own exit code
        import click

        if isinstance(err, click.exceptions.Exit):
            sys.exit(err.exit_code)
        if isinstance(err, click.exceptions.ClickException):
            err.show()
            sys.exit(err.exit_code)
        if isinstance(err, click.exceptions.Abort):
            sys.exit(130)
        if debug:
            raise
        err_console.print(f"[red]internal error:[/] {one_line(f'{type(err).__name__}: {err}')} (rerun with --debug)",
                          highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
