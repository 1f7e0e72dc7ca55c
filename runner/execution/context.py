"""A sweep's context for any command: its file (or a study joined by name), data, workdir, study and tracking URI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.search.optuna_search import make_pruner, make_sampler
from runner.spec.sweep import Sweep, load_sweep
from runner.study import storage
from runner.tracking.mlflow_runs import default_tracking_uri, given_tracking_uri
from zoo import atomic, load_dataset
from zoo.data import Dataset
from zoo.errors import UserError
from zoo.secrets import MASK, mask_url
from zoo.spec import WEIGHTS_WITHOUT_FILE


@dataclass
class SweepContext:
    """A loaded sweep with its data, workdir and study, ready to plan or run."""

    sweep: Sweep
    source: str
    dataset: Dataset
    workdir: Path
    storage_url: str
    tracking_uri: str

    def has_study(self) -> bool:
        """Whether a study may exist yet: a local default one only once its file does."""
        return self.storage_url != storage.default_storage(self.workdir) or (self.workdir / "optuna.db").exists()

    def open_study(self, create: bool = True) -> Any:
        opened = storage.open_storage(self.storage_url)
        if not create:
            return storage.existing_study(self.sweep.name, opened)
        study = storage.open_study(self.sweep.name, opened, self.sweep.search.study_direction(),
                                   make_sampler(self.sweep), make_pruner(self.sweep))
        if "sweep_yaml" not in study.user_attrs:  # the sweep travels with its study (shared: no credentials)
            study.set_user_attr("sweep_yaml", self.sweep.shareable_yaml())
            if self.tracking_uri.startswith(("http://", "https://")):
                study.set_user_attr("tracking_uri", mask_url(self.tracking_uri))  # workers joining by name find it
            study.set_user_attr("data_fingerprint", self.dataset.fingerprint)
        return study


def load_context(path: Path, workdir: Path | None, storage_url: str | None, create_workdir: bool,
                 tracking_uri: str | None = None, sweep: Sweep | None = None,
                 data_root: Path | None = None) -> SweepContext:
    """A sweep file's (or an already loaded sweep's) context; `data_root` points at this machine's copy."""
    sweep = sweep or load_sweep(path)
    if data_root is not None:
        sweep = sweep.model_copy(update={"data": sweep.data.model_copy(update={"root": data_root.expanduser()})})
    dataset = load_dataset(sweep.data.root, sweep.data.labels)
    workdir = (workdir or Path("runs") / sweep.name).expanduser()
    if create_workdir:
        atomic.writable_dir(workdir, "workdir")
    url = storage_url or storage.default_storage(workdir)
    return SweepContext(sweep, str(path), dataset, workdir, url, resolve_tracking_uri(sweep, workdir, tracking_uri))


def sweep_from_study(storage_url: str, name: str) -> Sweep:
    """The sweep file stored in its study on creation: how a worker joins by study name alone."""
    import yaml

    from runner.spec.sweep import sweep_from_mapping

    study = storage.existing_study(name, storage.open_storage(storage_url))
    if study is None:
        raise UserError(f"no study {name!r} in {storage.mask_url(storage_url)}")
    text = study.user_attrs.get("sweep_yaml")
    if not text:
        raise UserError(f"study {name!r} was not created by videosweep (it holds no sweep file)")
    sweep = sweep_from_mapping(yaml.safe_load(text), None).without_masked_urls()
    files = sorted(value for name, value in sweep.named_files() if value not in WEIGHTS_WITHOUT_FILE)
    if files:  # the study is shared and not trusted: a path in it could make this machine load any file
        raise UserError(f"study {name!r} names local files ({files[0][:200]}{', ...' if len(files) > 1 else ''}); "
                        "a worker loads files named only by its own sweep file: give it the sweep file")
    return sweep


def worker_context(sweep_file: Path | None, storage_url: str | None, study_name: str | None,
                   workdir: Path | None, tracking_uri: str | None, data_root: Path | None) -> SweepContext:
    """What `videosweep worker` joins: a sweep file, or a study by name whose sweep file and tracking server
    travel in the study itself."""
    if storage_url is None:
        raise UserError("a worker needs the shared study: --storage postgresql://... (and a sweep file or --study)")
    if sweep_file is None and study_name is None:
        raise UserError("give the sweep file or --study NAME to join")
    sweep = sweep_from_study(storage_url, study_name) if sweep_file is None else None
    chosen = given_tracking_uri(tracking_uri, sweep.tracking.uri if sweep else None)
    if sweep is not None and not chosen:  # the study keeps the URI the sweep was started with
        found = storage.existing_study(sweep.name, storage.open_storage(storage_url))
        tracking_uri = chosen = found.user_attrs.get("tracking_uri") if found is not None else None
    if sweep is not None and MASK in (chosen or ""):  # the study keeps URIs masked: the password is not there
        raise UserError(f"study {study_name!r} keeps its tracking URI without the password; give it with "
                        "--tracking-uri or $MLFLOW_TRACKING_URI (or $MLFLOW_TRACKING_USERNAME/PASSWORD)")
    return load_context(sweep_file or Path(f"<study {study_name}>"), workdir, storage_url, create_workdir=False,
                        tracking_uri=tracking_uri, sweep=sweep, data_root=data_root)


def resolve_tracking_uri(sweep: Sweep, workdir: Path, tracking_uri: str | None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else the sweep file's tracking.uri, else SQLite in the workdir."""
    return given_tracking_uri(tracking_uri, sweep.tracking.uri) or default_tracking_uri(workdir)


def load_tracking_only(path: Path, workdir: Path | None, tracking_uri: str | None) -> tuple[Sweep, Path, str]:
    """What reports need: the sweep, its workdir and tracking URI; the data need not be on this machine."""
    sweep = load_sweep(path)
    workdir = (workdir or Path("runs") / sweep.name).expanduser()
    return sweep, workdir, resolve_tracking_uri(sweep, workdir, tracking_uri)
