"""ImageNet weights: fetched the way a careful user would, once per machine, before any worker starts.

Files come from the URLs Keras uses (or a mirror of them, $VIDEOSWEEP_WEIGHTS_URL) and land in Keras's own cache
($KERAS_HOME/models), so Keras and other tools find them. One process downloads a file under a lock while the
others wait and then use it (Keras's `get_file` run by several workers at once races on one file); the download
goes to a temporary sibling renamed into place only once it is complete and verified, so a wrong hash, a
truncated transfer, an HTTP error or a full disk leaves nothing in the cache.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from zoo import atomic
from zoo.backbones import imagenet_weights_file, keras_models_dir
from zoo.errors import UserError
from zoo.registry import get_backbone
from zoo.secrets import mask_text, mask_url

if TYPE_CHECKING:  # pragma: no cover
    from zoo.spec import ModelSpec

KERAS_APPLICATIONS = "https://storage.googleapis.com/tensorflow/keras-applications/"
MIRROR_ENV = "VIDEOSWEEP_WEIGHTS_URL"
OFFLINE_ENV = "VIDEOSWEEP_OFFLINE"
RECORDED_SUFFIX = ".sha256"  # beside a file Keras publishes no hash for: the sha256 of its first download
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
CHUNK = 1 << 20
TIMEOUT_SECONDS = 60.0
LOCK_SECONDS = 3600.0  # a slow link may take long over a large file: wait for the downloader, not for ever


@dataclass(frozen=True)
class WeightsSource:
    """Where Keras fetches a backbone's "no top" ImageNet weights, and the md5 it checks them against."""

    backbone: str
    url: str  # the file's name is the last part; mobilenet_v2's holds {rows}
    published_md5: str | None  # None: Keras publishes no hash (the first download's sha256 is recorded instead)
    rows: tuple[int, ...] = ()  # square sizes with a file of their own; other sizes load the largest


# From keras/src/applications/{vgg16,resnet,inception_v3,xception,inception_resnet_v2,mobilenet_v2}.py.
WEIGHTS_SOURCES: dict[str, WeightsSource] = {source.backbone: source for source in (
    WeightsSource("vgg16", KERAS_APPLICATIONS + "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                  "6d6bbae143d832006294945121d1f1fc"),
    WeightsSource("resnet50", KERAS_APPLICATIONS + "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                  "4d473c1dd8becc155b73f8504c6f6626"),
    WeightsSource("inception_v3",
                  KERAS_APPLICATIONS + "inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
                  "bcbd6486424b2319ff4ef7d526e38f63"),
    WeightsSource("xception", KERAS_APPLICATIONS + "xception/xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
                  "b0042744bf5b25fce3cb969f33bebb97"),
    WeightsSource("inception_resnet_v2", KERAS_APPLICATIONS
                  + "inception_resnet_v2/inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
                  "d19885ff4a710c122648d3b5c3b684e4"),
    WeightsSource("mobilenet_v2", KERAS_APPLICATIONS
                  + "mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5",
                  None, rows=(96, 128, 160, 192, 224)),
)}


@dataclass(frozen=True)
class WeightsFile:
    """One ImageNet weights file a backbone at some frame size loads."""

    backbone: str
    name: str
    keras_url: str
    published_md5: str | None

    def path(self, folder: Path | None = None) -> Path:
        return (folder or keras_models_dir()) / self.name

    @property
    def url(self) -> str:
        """Keras's URL, or the mirror's copy of it."""
        return mirrored(self.keras_url)


class DownloadReporter(Protocol):
    """How a download shows itself (the CLI: a rich bar on a terminal, one line per file otherwise)."""

    def start(self, name: str, total: int | None) -> None: ...

    def advance(self, size: int) -> None: ...

    def done(self, name: str, size: int, check: str) -> None: ...

    def abort(self) -> None: ...  # the fetch failed (its one-line error follows)


class Silent:
    def start(self, name: str, total: int | None) -> None:
        pass

    def advance(self, size: int) -> None:
        pass

    def done(self, name: str, size: int, check: str) -> None:
        pass

    def abort(self) -> None:
        pass


def mirror_base() -> str | None:
    """$VIDEOSWEEP_WEIGHTS_URL (an http(s) copy of Keras's keras-applications/ folders), None when unset."""
    base = os.environ.get(MIRROR_ENV, "").strip()
    if not base:
        return None
    if urlsplit(base).scheme not in ("http", "https") or not urlsplit(base).hostname:
        raise UserError(f"{MIRROR_ENV}={mask_url(base)} is not an http(s) URL (a copy of Keras's "
                        "keras-applications/ folders, e.g. https://mirror.example/keras-applications)")
    return base.rstrip("/") + "/"


def mirrored(keras_url: str) -> str:
    """A Keras weights URL with everything up to and including `keras-applications/` replaced by the mirror."""
    base = mirror_base()
    return keras_url if base is None else base + keras_url.split("keras-applications/", 1)[1]


def offline_reason() -> str | None:
    return f"{OFFLINE_ENV}=1" if os.environ.get(OFFLINE_ENV, "").strip() not in ("", "0") else None


def weights_file(backbone: str, frame_size: tuple[int, int] | None = None) -> WeightsFile:
    """The file `backbone` loads at `frame_size` (default: its native size), or a one-line UserError naming the
    sizes that exist."""
    try:
        entry = get_backbone(backbone)
    except KeyError as err:
        raise UserError(err.args[0]) from None
    source = WEIGHTS_SOURCES.get(entry.name)
    if source is None:
        raise UserError(f"backbone {entry.name} has no published ImageNet weights; use weights: none")
    size = frame_size or (entry.native_size, entry.native_size)
    if min(size) < entry.min_size:
        sizes = (", ".join(f"{r}x{r}" for r in source.rows) + f" (any other size of at least {entry.min_size}x"
                 f"{entry.min_size} loads the {max(source.rows)}x{max(source.rows)} file)") if source.rows \
            else f"frames of at least {entry.min_size}x{entry.min_size}"
        raise UserError(f"{entry.name} has no ImageNet weights for {size[0]}x{size[1]} frames; they exist for {sizes}")
    name = imagenet_weights_file(entry, size).name
    return WeightsFile(entry.name, name, source.url.rsplit("/", 1)[0] + "/" + name, source.published_md5)


def needed_by(spec: ModelSpec) -> list[WeightsFile]:
    """The ImageNet file a model spec loads ([] for random or file weights, no backbone, or an invalid spec)."""
    from zoo.spec import canonical_spec, invalid_reason

    canonical = canonical_spec(spec)
    if canonical.backbone is None or canonical.weights != "imagenet" or invalid_reason(canonical):
        return []
    return [weights_file(canonical.backbone, canonical.frame_size)]


def all_files() -> list[WeightsFile]:
    """Every file the table knows: one per backbone, one per listed size for mobilenet_v2."""
    files = []
    for source in WEIGHTS_SOURCES.values():
        for rows in source.rows or (None,):
            files.append(weights_file(source.backbone, (rows, rows) if rows else None))
    return files


def file_hashes(path: Path) -> tuple[str, str]:
    """(md5, sha256) of a file, read once."""
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            md5.update(block)
            sha256.update(block)
    return md5.hexdigest(), sha256.hexdigest()


def recorded_sha256(path: Path) -> str | None:
    """The sha256 recorded beside `path` at its first download (sha256sum's format), None when none is."""
    record = path.with_name(path.name + RECORDED_SUFFIX)
    try:
        return record.read_text().split()[0].lower()
    except (OSError, IndexError):
        return None


def check_kind(file: WeightsFile, folder: Path | None = None) -> str:
    """How the cached copy of `file` can be checked: Keras's published md5, the recorded sha256, or nothing."""
    if file.published_md5:
        return "md5 published by Keras"
    if recorded_sha256(file.path(folder)):
        return "sha256 of the first download (unverified)"
    return "none (unverified)"


def hash_problem(file: WeightsFile, path: Path, md5: str, sha256: str) -> str | None:
    """Why these hashes are not those of `file`, None when they match (or nothing is known to check against)."""
    if file.published_md5 and md5 != file.published_md5:
        return f"md5 {md5} is not the {file.published_md5} Keras publishes"
    recorded = recorded_sha256(path)
    if not file.published_md5 and recorded and sha256 != recorded:
        return f"sha256 {sha256} is not the {recorded} recorded at its first download"
    return None


def verify(file: WeightsFile, folder: Path | None = None) -> str | None:
    """Why the cached copy fails its check, None when it passes or cannot be checked."""
    path = file.path(folder)
    return hash_problem(file, path, *file_hashes(path))


def fetch(files: Iterable[WeightsFile], reporter: DownloadReporter | None = None,
          folder: Path | None = None) -> list[Path]:
    """Make every file present in `folder` (Keras's cache by default), downloading what is missing; a file
    already in Keras's cache is copied from there into another folder. Offline: a one-line UserError with the
    air-gapped recipe for the first missing file."""
    reporter = reporter or Silent()
    if folder is not None and Path(folder).expanduser().exists() and not Path(folder).expanduser().is_dir():
        raise UserError(f"--to {folder} is a file; give a folder to put the weights files in")
    target = keras_models_dir() if folder is None else Path(folder).expanduser()
    wanted = list(dict.fromkeys(files))
    missing = [file for file in wanted if not file.path(target).is_file()]
    to_download = [file for file in missing if folder is None or not file.path().is_file()]
    reason = offline_reason()
    if to_download and reason:
        raise offline_error(to_download[0], reason)
    if missing:  # created only now: a sweep with everything cached writes nothing
        atomic.writable_dir(target, "Keras's weights cache" if folder is None else "weights folder")
    for file in missing:
        try:
            _fetch_one(file, target, reporter)
        except BaseException:
            reporter.abort()
            raise
    return [file.path(target) for file in wanted]


def offline_error(file: WeightsFile, reason: str) -> UserError:
    return UserError(
        f"ImageNet weights for {file.backbone} are not cached (looked for {file.path()}) and nothing is fetched "
        f"({reason}); on a machine with network run `videosweep weights fetch SWEEP_FILE --to DIR`, then copy "
        f"DIR's files into {keras_models_dir()}")


def _fetch_one(file: WeightsFile, folder: Path, reporter: DownloadReporter) -> None:
    from filelock import FileLock, Timeout

    path = file.path(folder)
    try:
        with FileLock(str(folder / f".{file.name}.lock"), timeout=LOCK_SECONDS):
            if path.is_file():  # another process fetched it while this one waited
                return
            cached = file.path()
            if cached != path and cached.is_file():
                _copy_cached(file, cached, path, reporter)
            else:
                _download(file, path, reporter)
    except Timeout:
        raise UserError(f"another process has been fetching {path} for over {LOCK_SECONDS:.0f} s; "
                        f"if none is, delete {folder / f'.{file.name}.lock'}") from None


def _copy_cached(file: WeightsFile, cached: Path, path: Path, reporter: DownloadReporter) -> None:
    """Carry a cached file (and its recorded hash) into another folder, for an air-gapped machine; a cached
    file that fails its check is not carried."""
    problem = verify(file)
    if problem:
        raise UserError(f"cached {cached} fails its check ({problem}): delete it and fetch again")
    size = cached.stat().st_size
    reporter.start(file.name, size)
    with _writing(path):
        recorded = cached.with_name(cached.name + RECORDED_SUFFIX)
        if recorded.is_file():
            atomic.write_text(path.with_name(recorded.name), recorded.read_text())
        with open(cached, "rb") as source, atomic.atomic_file(path) as target:
            shutil.copyfileobj(source, target, CHUNK)
    reporter.advance(size)
    reporter.done(file.name, size, f"copied from {cached.parent}")


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """A failed write (a full disk above all) reads as the one line every write failure reads as."""
    try:
        yield
    except OSError as err:
        raise atomic.write_error("weights file", path, err) from None


def _download(file: WeightsFile, path: Path, reporter: DownloadReporter) -> None:
    """Stream `file` into a temporary sibling of `path`, check length, hash and format, then rename it."""
    import http.client
    import urllib.error
    import urllib.request

    url = file.url
    shown = mask_url(url)
    try:
        response = urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS)  # noqa: S310 - http(s) checked above
    except urllib.error.HTTPError as err:
        raise UserError(f"cannot fetch {file.name}: HTTP {err.code} {err.reason} from {shown}") from None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as err:  # and a bad URL
        reason = mask_text(str(getattr(err, "reason", err)))
        raise UserError(f"ImageNet weights for {file.backbone} are not cached (looked for {path}) and cannot be "
                        f"fetched from {shown} ({reason}); without network: `videosweep weights fetch SWEEP_FILE "
                        f"--to DIR` elsewhere, then copy DIR's files into {path.parent}") from None
    with response:
        if "html" in (response.headers.get("Content-Type") or "").lower():
            raise UserError(f"cannot fetch {file.name}: {shown} answered with a web page, not a weights file "
                            f"(check {MIRROR_ENV})")
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
        received = 0
        reporter.start(file.name, total)
        with _writing(path), atomic.atomic_file(path) as handle:
            head = b""
            while True:
                try:
                    block = response.read(CHUNK)
                except (http.client.IncompleteRead, OSError) as err:
                    raise UserError(f"cannot fetch {file.name}: the transfer from {shown} broke off after "
                                    f"{received} of {total or '?'} bytes ({type(err).__name__})") from None
                if not block:
                    break
                head = head or block[:8]
                handle.write(block)
                md5.update(block)
                sha256.update(block)
                received += len(block)
                reporter.advance(len(block))
            if total is not None and received != total:
                raise UserError(f"cannot fetch {file.name}: truncated transfer from {shown} ({received} of "
                                f"{total} bytes)")
            problem = hash_problem(file, path, md5.hexdigest(), sha256.hexdigest())
            if problem:
                raise UserError(f"cannot fetch {file.name}: wrong hash from {shown}: {problem}; nothing was kept")
            if not head.startswith(HDF5_MAGIC):
                raise UserError(f"cannot fetch {file.name}: {shown} did not send an HDF5 weights file")
            check = "md5 matches Keras's" if file.published_md5 else "sha256 matches the recorded one"
            if not file.published_md5 and recorded_sha256(path) is None:  # the first download: remember it
                check = "Keras publishes no hash: sha256 recorded"
                atomic.write_text(path.with_name(path.name + RECORDED_SUFFIX), f"{sha256.hexdigest()}  {file.name}\n")
    reporter.done(file.name, received, check)


def remote_size(file: WeightsFile) -> int | None:
    """The file's size as its server states it (a HEAD request), None offline or when it does not say."""
    import http.client
    import urllib.error
    import urllib.request

    if offline_reason():
        return None
    try:
        with urllib.request.urlopen(urllib.request.Request(file.url, method="HEAD"), timeout=10) as response:
            length = response.headers.get("Content-Length")
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException):
        return None
    return int(length) if length and length.isdigit() else None
