"""`videosweep pool ...`: a resident worker pool per user and machine, so that `run` starts its first trial without
waiting for TensorFlow's import: start it (for the slots a sweep would use), list it, stop it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

pool_app = typer.Typer(help="A resident worker pool: `run` forks its workers from it instead of starting "
                            "them (start, status, stop).", no_args_is_help=True)
console = Console(soft_wrap=True)


@pool_app.command("start")
def start(
    sweep_file: Annotated[Optional[Path], typer.Argument(
        help="Serve the slots this sweep's resources give (default: the resources' defaults).")] = None,
    gpus: Annotated[Optional[str], typer.Option(help="auto | none | 0,1,3, as for `run`.")] = None,
    trials_per_gpu: Annotated[Optional[int], typer.Option(help="Concurrent trials per GPU, as for `run`.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="CPU slots when no GPU is used, as for `run`.")] = None,
    backend: Annotated[Optional[str], typer.Option(help="Keras backend, as for `run`.")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="The --cache-dir `run` will be given, if any.")] = None,
    idle_minutes: Annotated[float, typer.Option(
        min=0.1, help="A server leaves after this long with no sweep connected and no worker running.")] = 60.0,
) -> None:
    """Start a server per worker setup of this machine's slots (one for all CPU slots; one per GPU): each imports
    the backend once and forks ready workers for every `run`, `resume` and `worker` whose setup, code and
    environment match. Returns when they answer."""
    from runner import backends
    from runner.execution import pool
    from runner.execution.scheduler import plan_slots, slot_setup
    from runner.execution.worker import ProcessSetup
    from runner.spec.sweep import load_sweep, merged_resources

    overrides = {"gpus": gpus, "trials_per_gpu": trials_per_gpu, "workers": workers, "backend": backend}
    resources = merged_resources(load_sweep(sweep_file) if sweep_file else None, overrides)
    name = backends.activate(backends.chosen(resources.backend), "--backend" if backend else "KERAS_BACKEND")
    backends.require(name)
    base = ProcessSetup(name, trials_per_gpu=resources.trials_per_gpu, cache_dir=str(cache_dir) if cache_dir else None)
    setups = list(dict.fromkeys(slot_setup(base, slot) for slot in
                                plan_slots(resources.gpus, resources.trials_per_gpu, resources.workers)))
    with console.status(f"starting {len(setups)} worker pool server(s) (importing {name})"):
        servers = pool.start(setups, idle_minutes * 60)
    for setup, (pid, started) in zip(setups, servers):
        where = f"GPU {setup.gpu}" if setup.gpu is not None else f"CPU, {setup.cpu_threads} thread(s)"
        console.print(f"{'started' if started else 'already running'}: server {pid} for {name} on {where}")
    console.print(f"`run` forks its workers from it (same code and environment); it leaves after {idle_minutes:g} "
                  "idle minute(s), or `videosweep pool stop`")


@pool_app.command("status")
def status() -> None:
    """The servers of this user on this machine: their setup, workers running, workers forked so far."""
    from runner.execution import pool

    found = pool.servers()
    if not found:
        console.print(f"no worker pool server in {pool.pool_dir()}")
        return
    table = Table(title=f"worker pool servers in {pool.pool_dir()}")
    for column in ("server", "backend", "device", "sweeps connected", "workers running", "forked", "up"):
        table.add_column(column)
    for path, client in found:
        if client is None:
            table.add_row(path.stem, "-", "-", "-", "-", "-", "not answering")
            continue
        with client:
            info = client.request("status")
        setup = info["setup"]
        device = f"GPU {setup['gpu']}" if setup["gpu"] is not None else f"CPU x{setup['cpu_threads']}"
        table.add_row(str(info["pid"]), setup["backend"], device, str(info["clients"]), str(len(info["workers"])),
                      str(info["forked"]), f"{info['up_seconds'] / 60:.0f} min")
    console.print(table)


@pool_app.command("stop")
def stop() -> None:
    """Stop every server: each stops answering now and leaves once the workers it forked are done."""
    from runner.execution import pool

    stopped = 0
    for path, client in pool.servers():
        if client is None:
            path.unlink(missing_ok=True)  # a server that died without removing its socket
            continue
        with client:
            running = client.request("stop")
        stopped += 1
        console.print(f"server {client.server_pid}: stopping" + (
            f" once its {len(running)} running worker(s) are done" if running else ""))
    if not stopped:
        console.print("no worker pool server was running")
