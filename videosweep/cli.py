"""The `videosweep` command line: the one place that prints for people and turns outcomes into exit codes.

Every user error becomes one line and exit 2; run, resume and worker exit 0 when every trial finished, 1 when some
failed for good, 130 when interrupted.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

import runner  # noqa: F401 - its import sets the offline defaults (MLflow telemetry off) for every process
from videosweep.data import data_app
from videosweep.pool import pool_app
from videosweep.usage import click_style_help, print_version, usage_error_exit
from videosweep.weights import weights_app
from zoo.errors import UserError, one_line
from zoo.secrets import mask_text, mask_url

app = typer.Typer(
    name="videosweep",
    help="Experiment sweeps over a zoo of video-classification models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["--help", "-h"]},  # inherited by every subcommand
)
app.add_typer(data_app, name="data")
app.add_typer(weights_app, name="weights")
app.add_typer(pool_app, name="pool")
click_style_help()
console = Console(stderr=False, soft_wrap=True)
err_console = Console(stderr=True)
INTERRUPTED_EXIT = 130


@app.callback()
def _global(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    offline: Annotated[bool, typer.Option("--offline", envvar="VIDEOSWEEP_OFFLINE",
                                          help="Fetch nothing: ImageNet weights must be cached already.")] = False,
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=print_version,
                                          help="Print the versions of videosweep, Keras, its backend, Optuna and "
                                          "MLflow, and exit.")] = False,
) -> None:
    """(--debug is read by `main` before the app runs.)"""
    if offline:  # read by zoo.weights wherever weights are resolved, worker processes included
        os.environ["VIDEOSWEEP_OFFLINE"] = "1"


def quiet_tensorflow(load: bool = False, backend: str | None = None, cache_dir: Path | None = None) -> None:
    """Choose the Keras backend before Keras is imported (`backend`, else $KERAS_BACKEND, else tensorflow);
    with `load`, import and configure it (TensorFlow's C++ start-up chatter, which hides the lines users need,
    kept to warnings and errors; JAX's compilation cache in the cache folder)."""
    from runner import backends

    name = backends.activate(backends.chosen(backend), "--backend" if backend else "KERAS_BACKEND")
    if load:
        backends.configure(name, cache_dir=cache_dir)


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
    backend: Annotated[Optional[str], typer.Option(
        help="Keras backend: tensorflow | jax | torch (default: $KERAS_BACKEND, else tensorflow).")] = None,
) -> None:
    """Train one model on a dataset and write params, results, history, confusion matrices and the model."""
    from runner.spec.trial_spec import TrialSpec, parse_assignments, read_yaml_mapping
    from zoo import atomic, load_dataset, validated_spec

    params: dict[str, Any] = read_yaml_mapping(config, "config file") if config else {}
    params.update(parse_assignments(set_ or []))
    quiet_tensorflow(backend=backend)  # a bad or missing backend is refused before anything is read
    spec = TrialSpec.from_flat(params)
    from videosweep.progress import DownloadProgress
    from zoo.weights import fetch, needed_by

    fetch(needed_by(spec.model), DownloadProgress(console))  # ImageNet weights not cached yet: once, here
    validated_spec(spec.model)  # invalid combinations and missing weights fail before any data is read
    dataset = load_dataset(data, labels, cache_dir)
    atomic.check_replaceable(out, overwrite, atomic.TRIAL_MARKER)

    quiet_tensorflow(load=True, backend=backend, cache_dir=cache_dir)
    from runner.trial.training import run_trial

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

    from runner.spec.sweep import Sweep

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

    from runner.spec.baselines import baseline_lines
    from runner.execution.overview import plan_report
    from runner.execution.context import load_context

    ctx = load_context(sweep_file, workdir, storage, create_workdir=False)
    report = plan_report(ctx, verbose)
    if as_json:
        print(json.dumps(report, indent=2, default=str))
        return
    console.print(f"[bold]{ctx.sweep.name}[/]: {ctx.sweep.search.strategy} search on {ctx.dataset.name} "
                  f"({len(ctx.dataset.labels)} frames); study {report['storage']}")
    if report["per_subspace"] is None:
        console.print(f"budget: {ctx.sweep.search.trials} trials (sampler {ctx.sweep.search.sampler}, "
                      f"pruner {ctx.sweep.search.pruner})")
    else:
        repeats = f" ({report['points']} point(s) x {report['repeats']} seed repeats)" if report["repeats"] > 1 else ""
        table = Table(title=f"{report['trials']} trials{repeats} from {report['combinations']} combinations")
        for column, justify in (("sub-space", "left"), ("architecture", "left"), ("trials", "right")):
            table.add_column(column, justify=justify)
        for index, (sub, count) in enumerate(zip(ctx.sweep.space, report["per_subspace"])):
            table.add_row(str(index), ", ".join(map(str, sub["architecture"])), str(count))
        console.print(table)
        if report["duplicates"]:
            console.print(f"{report['duplicates']} duplicate(s) after canonicalisation removed")
        for reason, count in sorted(report["dropped"].items(), key=lambda item: -item[1]):
            console.print(f"dropped {count}: {reason}")
        for dropped in report.get("dropped_combinations", []):
            console.print(f"  {dropped['params']} -> {dropped['reason']}")
        for extraction, users in sorted(report["feature_extractions"].items()):
            console.print(f"feature extraction {extraction}: shared by {users} trial(s)")
        for entry, size in sorted(report["cache_bytes"].items()):
            console.print(f"cache {entry}: {size / 2**20:,.1f} MiB")
    budget = report["epoch_budget"]
    if "schedule" in report:
        rungs = ", ".join(f"rung {r['rung']}: {r['trials']} trial(s) to {r['epochs']} epoch(s)"
                          for r in budget["rungs"])
        console.print(f"epoch budget: {budget['with_schedule']} with {report['schedule']['kind']} ({rungs}), "
                      f"{budget['without_schedule']} without (at most; early stopping can only shorten it)")
    else:
        console.print(f"epoch budget: at most {budget['without_schedule']} epochs (early stopping can only "
                      "shorten it)")
    console.print("study: " + ", ".join(f"{v} {k}" for k, v in report["states"].items()))
    for line in baseline_lines(report["baselines"]):
        console.print(line, highlight=False)
    for weights in report["weights"]:
        size = "size unknown" if weights["bytes"] is None else f"{weights['bytes'] / 2**20:,.1f} MiB"
        console.print(f"weights to fetch before the workers start: {weights['file']} ({size}) from {weights['url']}",
                      highlight=False)
    from runner.execution.estimate import describe

    if report["reused"]:
        console.print(f"{report['reused']} trial(s) finished in other sweeps of the tracking store: reused, not "
                      "trained (--no-reuse trains them)")
    for note in report.get("reuse_notes", []):
        console.print(note, highlight=False)
    console.print(f"estimate: about {describe(report['estimate_seconds'])} for {report['to_train']} trial(s) to "
                  f"train on {report['slots']} slot(s); based on {report['estimate_basis']}", highlight=False)


# Options shared by run, resume and worker; each overrides the sweep file's `resources` key of the same name
# and is validated by the same model (runner.spec.sweep.merged_resources).
GpusOpt = Annotated[Optional[str], typer.Option(help="auto | none | 0,1,3 (default: the sweep's resources).")]
TrialsPerGpuOpt = Annotated[Optional[int], typer.Option(help="Concurrent trials per GPU.")]
WorkersOpt = Annotated[Optional[int], typer.Option(help="CPU slots when no GPU is used.")]
MaxRetriesOpt = Annotated[Optional[int], typer.Option(help="Retries of a failed trial (default 1).")]
TrialTimeoutOpt = Annotated[Optional[float], typer.Option(help="Kill a trial after this many seconds.")]
TrialsPerProcessOpt = Annotated[Optional[int], typer.Option(help="Recycle a worker after this many trials.")]
MemoryLimitOpt = Annotated[Optional[float], typer.Option(help="Recycle a worker past this many MiB.")]
BackendOpt = Annotated[Optional[str], typer.Option(
    help="Keras backend: tensorflow | jax | torch (default: the sweep's resources.backend, $KERAS_BACKEND, "
    "tensorflow).")]
CacheDirOpt = Annotated[Optional[Path], typer.Option(help="Frame/feature cache (per machine).")]
TrackingOpt = Annotated[Optional[str], typer.Option(
    help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, the sweep's tracking.uri, sqlite in the workdir).")]


NotifyOpt = Annotated[Optional[str], typer.Option(
    "--notify", help="POST a JSON summary to this URL on the sweep's notify.on events (default: end, failure).")]
IgnoreStopOpt = Annotated[bool, typer.Option(
    "--ignore-stop", help="Go on with a sweep a stop rule stopped (stop rules off for this run).")]
LogDiffOpt = Annotated[bool, typer.Option(
    "--log-diff", help="Log the uncommitted git diff (source and config files, masked) to MLflow (off: only the "
    "commit and whether the tree is dirty).")]
NoReuseOpt = Annotated[bool, typer.Option(
    "--no-reuse", help="Train trial keys again even if they finished in another sweep of the tracking store.")]


def _run(ctx: Any, cache_dir: Path | None, retry_failed: bool, **overrides: Any) -> None:
    """Run a loaded sweep with validated options; the outcome becomes the last line and the exit code
    (the same for run, resume and worker): 0 all finished (or a stop rule stopped the sweep), 1 some trials
    failed for good, 2 bad input (raised before anything runs), 130 interrupted, 143 preempted (SIGTERM)."""
    from runner.execution.run import RunOptions, run_sweep
    from videosweep.progress import SweepProgress

    options = RunOptions.build(ctx.sweep, cache_dir=cache_dir, retry_failed=retry_failed, **overrides)
    outcome = run_sweep(ctx, options, SweepProgress(console, ctx.sweep.search.metric))
    counts = outcome.counts
    if outcome.nothing_to_run and outcome.stopped:
        console.print(f"nothing to run: sweep stopped ({outcome.stopped}); `videosweep resume --ignore-stop` "
                      "goes on")
    elif outcome.nothing_to_run:
        console.print(f"nothing to run: finished {counts['complete']}, failed {counts['fail']} (retries used up)")
    else:
        console.print(f"finished {counts['complete']}, failed {counts['fail']}, pruned {counts['pruned']}, "
                      f"pending {counts['waiting']}" + (
                          "; preempted (SIGTERM): `videosweep resume` continues each trial from its last checkpoint"
                          if outcome.preempted else "; interrupted: `videosweep resume` finishes the sweep"
                          if outcome.interrupted else "")
                      + (f"; stopped: {outcome.stopped}" if outcome.stopped and not outcome.interrupted else ""))
    if outcome.exit_code == 1:
        console.print(f"{outcome.failed_for_good} trial(s) failed for good; tracebacks in {outcome.failures_dir}/",
                      highlight=False)
    if outcome.exit_code:
        raise typer.Exit(outcome.exit_code)


@app.command()
def run(
    sweep_file: SweepArg,
    workdir: WorkdirOpt = None,
    storage: StorageOpt = None,
    gpus: GpusOpt = None,
    trials_per_gpu: TrialsPerGpuOpt = None,
    workers: WorkersOpt = None,
    max_retries: MaxRetriesOpt = None,
    trial_timeout: TrialTimeoutOpt = None,
    trials_per_process: TrialsPerProcessOpt = None,
    cache_dir: CacheDirOpt = None,
    memory_limit: MemoryLimitOpt = None,
    backend: BackendOpt = None,
    retry_failed: Annotated[bool, typer.Option(help="Run failed trials again even if their retries are used up.")
                            ] = False,
    tracking_uri: TrackingOpt = None,
    notify_url: NotifyOpt = None,
    ignore_stop: IgnoreStopOpt = False,
    no_reuse: NoReuseOpt = False,
    log_diff: LogDiffOpt = False,
) -> None:
    """Run a sweep (again: only what has not finished runs)."""
    from runner.execution.context import load_context

    ctx = load_context(sweep_file, workdir, storage, create_workdir=False, tracking_uri=tracking_uri)
    _run(ctx, cache_dir, retry_failed, notify_url=notify_url, ignore_stop=ignore_stop, reuse=not no_reuse,
         log_diff=log_diff, gpus=gpus, trials_per_gpu=trials_per_gpu, workers=workers,
         max_retries=max_retries, trial_timeout=trial_timeout, trials_per_process=trials_per_process,
         memory_limit_mb=memory_limit, backend=backend)


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
    trials_per_gpu: TrialsPerGpuOpt = None,
    workers: WorkersOpt = None,
    max_retries: MaxRetriesOpt = None,
    trial_timeout: TrialTimeoutOpt = None,
    trials_per_process: TrialsPerProcessOpt = None,
    cache_dir: CacheDirOpt = None,
    memory_limit: MemoryLimitOpt = None,
    backend: BackendOpt = None,
    tracking_uri: TrackingOpt = None,
    notify_url: NotifyOpt = None,
    ignore_stop: IgnoreStopOpt = False,
    no_reuse: NoReuseOpt = False,
) -> None:
    """Join a sweep from this machine: take trials from the shared study until none are left."""
    from runner.execution.context import worker_context

    ctx = worker_context(sweep_file, storage, study, workdir, tracking_uri, data)
    _run(ctx, cache_dir, False, notify_url=notify_url, ignore_stop=ignore_stop, reuse=not no_reuse,
         gpus=gpus, trials_per_gpu=trials_per_gpu, workers=workers,
         max_retries=max_retries, trial_timeout=trial_timeout, trials_per_process=trials_per_process,
         memory_limit_mb=memory_limit, backend=backend)


@app.command()
def status(sweep_file: SweepArg, workdir: WorkdirOpt = None, storage: StorageOpt = None,
           all_trials: Annotated[bool, typer.Option("--all", help="List every trial (else a large sweep lists "
                                                    "its unfinished and latest trials).")] = False) -> None:
    """A table of the sweep's trials (key, state, metric, duration) and totals."""
    from runner.spec.baselines import baseline_lines, baselines_json
    from runner.execution.overview import STATUS_ROWS, shown_rows, state_word, status_rows
    from runner.study.claims import state_counts
    from runner.execution.context import load_context

    ctx = load_context(sweep_file, workdir, storage, create_workdir=False)
    study = ctx.open_study(create=False) if ctx.has_study() else None
    if study is None:
        raise UserError(f"sweep {ctx.sweep.name} has not been run yet (no study in {ctx.workdir})")
    table = Table(title=f"{ctx.sweep.name}")
    halving = ctx.sweep.search.stages_epochs
    for column in ("#", "key", "architecture", "state", *(("rung", "epochs") if halving else ()),
                   ctx.sweep.search.metric, "seconds", "note"):
        table.add_column(column)
    rows, left_out = shown_rows(status_rows(study), None if all_trials else STATUS_ROWS)
    for row in rows:
        state = row["state"]
        if row["paused"] and state == "complete":  # stopped at its rung: promoted on, or stopped there
            state = "promoted" if row["promoted"] else "paused"
        rung = (str(row["rung"]) if row["rung"] is not None else "", str(row["epochs"] or "")) if halving else ()
        table.add_row(str(row["number"]), row["key"], row["architecture"], state_word(state), *rung,
                      "" if row["value"] is None else f"{row['value']:.4f}",
                      "" if row["seconds"] is None else f"{row['seconds']:.1f}", row["note"][:80])
    console.print(table)
    if left_out:
        console.print(f"{left_out} earlier finished trial(s) not listed: `--all` lists them, `videosweep report` "
                      "ranks them", highlight=False)
    console.print(", ".join(f"{v} {state_word(k)}" for k, v in state_counts(study).items() if v))
    for line in baseline_lines(baselines_json(ctx.sweep, ctx.dataset)):
        console.print(line, highlight=False)
    from runner.search.stop import stop_reason

    reason = stop_reason(study)
    if reason:
        console.print(f"stopped: {reason} (`videosweep resume --ignore-stop` goes on)", highlight=False)


@app.command()
def ui(
    sweep_file: SweepArg,
    workdir: WorkdirOpt = None,
    tracking_uri: Annotated[Optional[str], typer.Option(help="MLflow tracking URI (default as for run).")] = None,
    port: Annotated[int, typer.Option(help="Port of the UI.")] = 5000,
    host: Annotated[str, typer.Option(help="Address to bind; anything but 127.0.0.1 exposes your runs.")] = "127.0.0.1",
    dashboard: Annotated[str, typer.Option(help="mlflow: the runs, metrics and artefacts | optuna: the live study "
                                           "(trials, intermediate values, importances), read-only; needs the "
                                           "[dashboard] extra.")] = "mlflow",
    storage: StorageOpt = None,
) -> None:
    """Start the MLflow UI on the sweep's tracking store, opened on its experiment (or the Optuna dashboard)."""
    import subprocess

    from runner.execution.context import load_context
    from runner.tracking.mlflow_runs import Tracker

    if dashboard not in ("mlflow", "optuna"):
        raise UserError(f"--dashboard {dashboard!r}: choose mlflow or optuna")
    ctx = load_context(sweep_file, workdir, storage, create_workdir=False, tracking_uri=tracking_uri)
    if host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(f"[yellow]warning:[/] binding to {host} lets anyone who can reach it read your runs")
    if dashboard == "optuna":
        _optuna_dashboard(ctx, host, port)
        return
    if ctx.tracking_uri.startswith(("http://", "https://")):
        console.print(f"{ctx.sweep.name} is tracked on a server: open {mask_url(ctx.tracking_uri)}")
        return
    if not (ctx.workdir / "mlflow.db").exists() and ctx.tracking_uri.startswith("sqlite"):
        raise UserError(f"sweep {ctx.sweep.name} has not been run yet (no MLflow store in {ctx.workdir})")
    experiment = Tracker(ctx.tracking_uri, ctx.workdir, ctx.sweep.name).experiment_id
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/#/experiments/{experiment}/runs"
    console.print(f"MLflow UI for {ctx.sweep.name}: {url}  (Ctrl-C stops it)")
    command = [sys.executable, "-m", "mlflow", "ui", "--host", host, "--port", str(port)]
    if ctx.tracking_uri.startswith("sqlite"):
        command += ["--default-artifact-root", (ctx.workdir / "mlartifacts").resolve().as_uri()]
    # The store's URL may hold a database password: the environment, unlike a command line, is not world-readable.
    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": ctx.tracking_uri}
    try:
        subprocess.run(command, check=False, env=env)
    except KeyboardInterrupt:
        pass


def _optuna_dashboard(ctx: Any, host: str, port: int) -> None:
    """The optuna-dashboard app on the sweep's study, through a storage that refuses every write."""
    try:
        import optuna_dashboard
    except ImportError:
        raise UserError("--dashboard optuna needs the optuna-dashboard package: pip install 'videosweep[dashboard]'")
    from runner.study import optuna_internals, storage

    study = ctx.open_study(create=False) if ctx.has_study() else None
    if study is None:
        raise UserError(f"sweep {ctx.sweep.name} has not been run yet (no study in {mask_url(ctx.storage_url)})")
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    console.print(f"Optuna dashboard for {ctx.sweep.name} (read-only): http://{shown}:{port}/dashboard/studies/"
                  f"{optuna_internals.study_id(study)}  (Ctrl-C stops it)", highlight=False)
    try:
        optuna_dashboard.run_server(storage.ReadOnlyStorage(optuna_internals.storage(study)), host=host, port=port)
    except KeyboardInterrupt:
        pass


MetricOpt = Annotated[Optional[str], typer.Option(help="Rank by this metric (default: the sweep's).")]


def _sweep_runs(sweep_file: Path, workdir: Path | None, tracking_uri: str | None) -> tuple[Any, Path, Any]:
    from reports.records import open_sweep_runs
    from runner.execution.context import load_tracking_only

    sweep, workdir, uri = load_tracking_only(sweep_file, workdir, tracking_uri)
    return sweep, workdir, open_sweep_runs(uri, workdir, sweep.name, sweep_file)


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
                           overwrite=overwrite or out is None, goals=None if metric else sweep.search.goals())
    best = summary["best"]
    console.print(f"{summary['finished']} finished of {summary['trials']} trials ranked; best: "
                  f"{best['trial_key'] if best else '-'}")
    if summary.get("stopped"):
        console.print(f"the sweep stopped early: {summary['stopped']}", highlight=False)
    if summary.get("banner"):  # no trial finished, or none clears the majority baseline: the report opens with it
        console.print(summary["banner"], highlight=False)
    folder = Path(summary["out"])
    console.print(f"report: {folder / 'report.html'}  leaderboard: {folder / 'leaderboard.md'}")


@app.command()
def best(
    sweep_file: SweepArg,
    metric: MetricOpt = None,
    workdir: WorkdirOpt = None,
    tracking_uri: TrackingOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    pareto: Annotated[bool, typer.Option("--pareto", help="Every non-dominated finished trial over the sweep's "
                                         "objectives (one metric: it and latency_ms).")] = False,
) -> None:
    """The best finished trial: key, MLflow run id, metric and parameters (or, with --pareto, the front)."""
    import json

    from reports.best import baseline_verdict, best_trial

    sweep, _, runs = _sweep_runs(sweep_file, workdir, tracking_uri)
    if pareto:
        from reports.pareto import front_goals, front_records, pareto_front
        from runner.spec.metrics import objective

        goals = front_goals([(metric, objective(metric).direction)] if metric else sweep.search.goals())
        front = front_records(pareto_front(runs.trials, goals))
        if as_json:
            print(json.dumps({"objectives": [{"metric": m, "direction": d} for m, d in goals], "front": front},
                             indent=2, default=str))
            return
        names = [m for m, _ in goals]
        console.print(f"Pareto front over {', '.join(f'{m} ({d})' for m, d in goals)}: {len(front)} trial(s)")
        for row in front:
            console.print(f"[bold]{row['trial_key']}[/] " + " ".join(f"{m}={row[m]:.4g}" for m in names)
                          + f"  MLflow run {row['run_id']}")
        return
    result = best_trial(runs, metric or sweep.search.metric, sweep.name, None if metric else sweep.search.goals())
    metric = metric or sweep.search.metric
    params = result["params"]
    if as_json:
        print(json.dumps(result, indent=2, default=str))
        return
    console.print(f"[bold]{result['trial_key']}[/] {metric} {result['value']:.4f} (held-out test accuracy "
                  f"{result['test_accuracy']:.4f}), MLflow run {result['run_id']}")
    console.print(", ".join(f"{k}={v}" for k, v in params.items()))
    if result["baselines"].get("val"):
        console.print(baseline_verdict(result), highlight=False)
    console.print(result["run_link"] or runs.link_hint(), highlight=False, markup=False)


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
    max_latency_ms: Annotated[Optional[float], typer.Option(
        help="Export the most accurate trial whose end-to-end latency (ms, measured per trial) is this or less.")
    ] = None,
    max_params: Annotated[Optional[float], typer.Option(
        help="Export the most accurate trial whose end-to-end model has at most this many parameters.")] = None,
    allow_baseline: Annotated[bool, typer.Option(
        "--allow-baseline", help="Export a model whose val accuracy's 95% interval does not clear the majority "
        "baseline (refused otherwise); its model card says so in its first line.")] = False,
) -> None:
    """A self-contained model on raw frames with labels.json, export.json and model_card.md."""
    from reports.best import best_trial
    from reports.export import export_trial, parse_formats
    from reports.pareto import check_budget, within_budget
    from runner.spec.metrics import objective

    formats = parse_formats(format_)
    check_budget(max_latency_ms, max_params)
    budgeted = max_latency_ms is not None or max_params is not None
    if budgeted and trial is not None:
        raise UserError("give either --trial or a budget (--max-latency-ms / --max-params), not both")
    quiet_tensorflow(load=True)
    sweep, _, runs = _sweep_runs(sweep_file, workdir, tracking_uri)
    if budgeted:  # the most accurate trial within the budget
        accuracy = metric or (sweep.search.metric if "accuracy" in sweep.search.metric else "val_accuracy")
        chosen = within_budget(runs.trials, accuracy, max_latency_ms, max_params)
        trial = str(chosen.trial_key)
        selection = {"rule": f"highest {accuracy} within the budget", "max_latency_ms": max_latency_ms,
                     "max_params": max_params, "latency_ms": float(chosen.latency_ms),
                     "param_count": float(chosen.deployed_param_count),
                     accuracy: float(chosen[objective(accuracy).final])}
    elif trial is None:
        goals = None if metric else sweep.search.goals()
        trial = str(best_trial(runs, metric or sweep.search.metric, sweep.name, goals)["trial_key"])
    meta = export_trial(runs, trial, out, formats, sweep.named_files(), register=register, overwrite=overwrite,
                        selection=selection if budgeted else None, allow_baseline=allow_baseline)
    console.print(f"exported {meta['architecture']} trial {trial} to {out} ({', '.join(meta['files'].values())}); "
                  f"input {meta['input']['shape']} RGB 0-255")
    if meta.get("registered"):
        console.print(f"registered as {meta['registered']}")
    if meta["baseline"]["exported_below_baseline"]:
        console.print("--allow-baseline: exported although it does not beat the majority baseline (model_card.md "
                      "says so first)", highlight=False)


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
    from runner.tracking.mlflow_runs import given_tracking_uri
    from zoo import atomic

    if (data is None) == (not video):
        raise UserError("give either --data DATASET or --video FILE (one or more), not both")
    exporter = None
    registry = given_tracking_uri(tracking_uri)
    if sweep is not None:
        from reports.export import export_trial
        from runner.execution.context import load_tracking_only

        _, workdir, registry = load_tracking_only(sweep, workdir, tracking_uri)

        def exporter(key: str, folder: Path) -> None:
            user_sweep, _, runs = _sweep_runs(sweep, workdir, tracking_uri)
            export_trial(runs, key, folder, ["keras"], user_sweep.named_files(), register=False,
                         allow_baseline=True)  # to predict with, not to ship

    quiet_tensorflow(load=True)
    predictor = load_predictor(model, exporter, registry, workdir)
    table = predict_dataset(predictor, data) if data is not None else predict_videos(predictor, video or [], fps)
    atomic.write_text(out, table.to_csv(index=False))
    predicted = table.prediction.astype(bool).sum()
    errors = (table.error == "1").sum()
    labelled = (table.error != "").sum()
    accuracy = f", accuracy {1 - errors / labelled:.3f} on {labelled} labelled frames" if labelled else ""
    console.print(f"{predicted} of {len(table)} frames predicted{accuracy}; wrote {out}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app; user errors -> one line on stderr, exit 2 (traceback only with --debug)."""
    from runner import backends

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", backends.chosen())  # whatever imports Keras gets the same backend
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or os.environ.get("VIDEOSWEEP_DEBUG") == "1"
    try:
        code = app(args=args, standalone_mode=False, prog_name="videosweep")  # typer.Exit(code): its value
    except UserError as err:
        if debug:
            traceback.print_exc()
        from rich.markup import escape  # messages name extras such as videosweep[jax]: not markup

        err_console.print(f"[red]error:[/] {escape(mask_text(one_line(str(err))))}", highlight=False, soft_wrap=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(INTERRUPTED_EXIT)
    except SystemExit:
        raise
    except typer.TyperException as err:  # usage mistakes: click's usage line and exit 2, as every click tool does
        usage_error_exit(err)
    except Exception as err:  # click's usage errors carry their own exit code
        import click

        if isinstance(err, click.exceptions.Exit):
            sys.exit(err.exit_code)
        if isinstance(err, click.exceptions.ClickException):
            err.show()
            sys.exit(err.exit_code)
        if isinstance(err, click.exceptions.Abort):
            sys.exit(INTERRUPTED_EXIT)
        if debug:
            raise
        reason = mask_text(one_line(f"{type(err).__name__}: {err}"))
        err_console.print(f"[red]internal error:[/] {reason} (rerun with --debug)",
                          highlight=False, soft_wrap=True)
        sys.exit(1)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
