"""ImageNet weights fetched for real from a local HTTP server on 127.0.0.1 (nothing here touches the internet):
the served files are real Keras backbones' weights made by the test, so hashes and formats are real."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import keras.src.applications as keras_applications
from tests.conftest import ROOT, run_cli
from zoo import weights
from zoo.errors import UserError

MOBILENET = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"  # what 32x32 frames load
VGG = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"


class WeightsServer:
    """A mirror of keras-applications/ on 127.0.0.1: path -> (body, how to serve it); counts every GET."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        self.gets: Counter[str] = Counter()
        self.delay = 0.0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self._answer(send_body=False)

            def do_GET(self) -> None:
                server.gets[self.path] += 1
                self._answer(send_body=True)

            def _answer(self, send_body: bool) -> None:
                body, how = server.files.get(self.path, (b"", "missing"))
                if how == "missing":
                    self.send_error(404)
                    return
                time.sleep(server.delay if send_body else 0)
                self.send_response(200)
                self.send_header("Content-Type", "text/html" if how == "html" else "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if send_body:
                    self.wfile.write(body[: len(body) // 2] if how == "truncated" else body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/keras-applications"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def serve(self, folder: str, name: str, body: bytes, how: str = "ok") -> None:
        self.files[f"/keras-applications/{folder}/{name}"] = (body, how)

    def count(self, folder: str, name: str) -> int:
        return self.gets[f"/keras-applications/{folder}/{name}"]


@pytest.fixture(scope="session")
def backbone_h5(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """Real MobileNetV2 (no top) weights in Keras's legacy .h5 layout, as Keras publishes them; tiny input, so
    cheap to build (the weights of a convolutional network do not depend on the input size)."""
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    model = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path_factory.mktemp("h5") / "weights.h5"
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, model)
    return path.read_bytes()


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> WeightsServer:
    served = WeightsServer()
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv(weights.MIRROR_ENV, served.url)
    monkeypatch.delenv(weights.OFFLINE_ENV, raising=False)
    yield served
    served.httpd.shutdown()


def cache_files(tmp_path: Path) -> list[str]:
    """What the Keras cache holds, less the lock files (hidden, empty, left by design: deleting a lock file is
    what makes two processes hold "the same" lock)."""
    folder = tmp_path / "keras" / "models"
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock")) if folder.is_dir() else []


def with_published_md5(monkeypatch: pytest.MonkeyPatch, backbone: str, md5: str) -> None:
    """The test's stand-in for the hash Keras publishes (the served file is the test's, not Google's)."""
    source = weights.WEIGHTS_SOURCES[backbone]
    monkeypatch.setitem(weights.WEIGHTS_SOURCES, backbone, dataclasses.replace(source, published_md5=md5))


def test_the_table_holds_keras_own_urls_and_hashes_and_the_registry_file_names():
    from zoo.registry import get_backbone

    sources = "".join(p.read_text() for p in Path(keras_applications.__file__).parent.glob("*.py"))
    for source in weights.WEIGHTS_SOURCES.values():
        folder_url, name = source.url.rsplit("/", 1)
        assert folder_url.removeprefix(weights.KERAS_APPLICATIONS) in sources.replace('"\n    "', "")
        assert name == get_backbone(source.backbone).imagenet_file
        assert source.published_md5 is None or f'"{source.published_md5}"' in sources
    assert weights.WEIGHTS_SOURCES["mobilenet_v2"].published_md5 is None  # Keras publishes none


def test_a_mirror_replaces_keras_url_up_to_keras_applications(monkeypatch):
    monkeypatch.setenv(weights.MIRROR_ENV, "https://mirror.example/ml/keras/")
    assert weights.weights_file("vgg16").url == f"https://mirror.example/ml/keras/vgg16/{VGG}"
    assert weights.weights_file("mobilenet_v2", (32, 32)).url == f"https://mirror.example/ml/keras/mobilenet_v2/{MOBILENET}"
    monkeypatch.setenv(weights.MIRROR_ENV, "ftp://mirror.example/keras")
    with pytest.raises(UserError, match="is not an http"):
        weights.weights_file("vgg16").url


def test_a_size_without_weights_names_the_sizes_that_exist():
    with pytest.raises(UserError, match=r"no ImageNet weights for 16x16 frames; they exist for 96x96, 128x128"):
        weights.weights_file("mobilenet_v2", (16, 16))
    with pytest.raises(UserError, match="at least 32x32"):
        weights.weights_file("vgg16", (20, 20))
    assert weights.weights_file("mobilenet_v2", (128, 128)).name.endswith("_1.0_128_no_top.h5")


def test_a_first_download_lands_in_keras_cache_with_its_sha256_recorded_and_is_fetched_once(server, tmp_path,
                                                                                              backbone_h5):
    server.serve("mobilenet_v2", MOBILENET, backbone_h5)
    file = weights.weights_file("mobilenet_v2", (32, 32))
    [path] = weights.fetch([file])
    assert path == tmp_path / "keras" / "models" / MOBILENET and path.read_bytes() == backbone_h5
    assert weights.recorded_sha256(path) == hashlib.sha256(backbone_h5).hexdigest()
    assert weights.check_kind(file) == "sha256 of the first download (unverified)"
    weights.fetch([file])
    assert server.count("mobilenet_v2", MOBILENET) == 1
    assert cache_files(tmp_path) == [MOBILENET, MOBILENET + ".sha256"]


def test_a_published_md5_is_checked(server, tmp_path, backbone_h5, monkeypatch):
    server.serve("vgg16", VGG, backbone_h5)
    with_published_md5(monkeypatch, "vgg16", hashlib.md5(b"another file").hexdigest())
    with pytest.raises(UserError, match="wrong hash .* is not the .* Keras publishes"):
        weights.fetch([weights.weights_file("vgg16")])
    assert cache_files(tmp_path) == []
    with_published_md5(monkeypatch, "vgg16", hashlib.md5(backbone_h5).hexdigest())
    weights.fetch([weights.weights_file("vgg16")])
    assert cache_files(tmp_path) == [VGG]  # a published hash needs no record beside the file
    assert weights.verify(weights.weights_file("vgg16")) is None


def test_a_later_download_must_match_the_recorded_sha256(server, tmp_path, backbone_h5):
    server.serve("mobilenet_v2", MOBILENET, backbone_h5)
    file = weights.weights_file("mobilenet_v2", (32, 32))
    weights.fetch([file])
    file.path().unlink()  # lost; the mirror now serves something else
    server.serve("mobilenet_v2", MOBILENET, backbone_h5[:-16] + b"\1" * 16)
    with pytest.raises(UserError, match="is not the .* recorded at its first download"):
        weights.fetch([file])
    assert cache_files(tmp_path) == [MOBILENET + ".sha256"]


@pytest.mark.parametrize("how, message", [
    ("truncated", r"broke off after|truncated transfer"),
    ("missing", r"HTTP 404"),
    ("html", r"answered with a web page"),
])
def test_a_bad_transfer_leaves_nothing_in_the_cache(server, tmp_path, backbone_h5, how, message):
    server.serve("mobilenet_v2", MOBILENET, backbone_h5 if how != "html" else b"<html>sign in</html>", how)
    if how == "missing":
        server.files.clear()
    with pytest.raises(UserError, match=message):
        weights.fetch([weights.weights_file("mobilenet_v2", (32, 32))])
    assert cache_files(tmp_path) == []


def test_a_server_that_sends_no_hdf5_file_is_refused(server, tmp_path):
    server.serve("mobilenet_v2", MOBILENET, b"not weights at all")
    with pytest.raises(UserError, match="did not send an HDF5 weights file"):
        weights.fetch([weights.weights_file("mobilenet_v2", (32, 32))])
    assert cache_files(tmp_path) == []


def test_offline_nothing_is_fetched_and_the_error_gives_the_air_gapped_recipe(server, tmp_path, monkeypatch,
                                                                              backbone_h5):
    server.serve("mobilenet_v2", MOBILENET, backbone_h5)
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    with pytest.raises(UserError) as refused:
        weights.fetch([weights.weights_file("mobilenet_v2", (32, 32))])
    message = str(refused.value)
    assert f"looked for {tmp_path / 'keras' / 'models' / MOBILENET}" in message
    assert "videosweep weights fetch SWEEP_FILE --to DIR" in message and "VIDEOSWEEP_OFFLINE=1" in message
    assert server.count("mobilenet_v2", MOBILENET) == 0


def test_fetch_to_a_folder_carries_the_files_and_a_file_is_refused(server, tmp_path, backbone_h5):
    server.serve("mobilenet_v2", MOBILENET, backbone_h5)
    file = weights.weights_file("mobilenet_v2", (32, 32))
    carried = run_cli("weights", "fetch", "--backbone", "mobilenet_v2", "--frame-size", "32x32",
                      "--to", str(tmp_path / "carry"))
    assert carried.returncode == 0, carried.stderr
    assert (tmp_path / "carry" / MOBILENET).read_bytes() == backbone_h5
    assert (tmp_path / "carry" / (MOBILENET + ".sha256")).is_file() and not file.path().exists()
    (tmp_path / "a-file").write_text("x")
    refused = run_cli("weights", "fetch", "--backbone", "mobilenet_v2", "--to", str(tmp_path / "a-file"))
    assert refused.returncode == 2 and "is a file" in refused.stderr and len(refused.stderr.splitlines()) == 1


def test_four_processes_at_once_download_once_and_all_use_the_file(server, tmp_path, backbone_h5):
    server.serve("mobilenet_v2", MOBILENET, backbone_h5)
    server.delay = 1.0  # the first downloader holds the lock while the others arrive
    code = ("from zoo import weights; [p] = weights.fetch([weights.weights_file('mobilenet_v2', (32, 32))]); "
            "print(p.stat().st_size)")
    processes = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)}) for _ in range(4)]
    sizes = [process.communicate(timeout=300)[0].strip() for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0, 0]
    assert sizes == [str(len(backbone_h5))] * 4
    assert server.count("mobilenet_v2", MOBILENET) == 1
    assert cache_files(tmp_path) == [MOBILENET, MOBILENET + ".sha256"]


def test_a_full_disk_leaves_nothing_in_the_cache(server, tmp_path, backbone_h5, monkeypatch):
    full = tmp_path / "full"
    full.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(full)], capture_output=True,
                             text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        monkeypatch.setenv("KERAS_HOME", str(full))
        server.serve("mobilenet_v2", MOBILENET, backbone_h5)  # ~9 MiB into 1 MiB
        with pytest.raises(UserError, match="no space left on device"):
            weights.fetch([weights.weights_file("mobilenet_v2", (32, 32))])
        assert [p.name for p in (full / "models").iterdir() if not p.name.endswith(".lock")] == []
    finally:
        subprocess.run(["umount", str(full)], check=False)


def test_weights_list_and_verify_say_what_is_cached_unverified_or_corrupt(server, tmp_path, backbone_h5,
                                                                          monkeypatch):
    server.serve("mobilenet_v2", MOBILENET, backbone_h5)
    weights.fetch([weights.weights_file("mobilenet_v2", (32, 32))])
    listed = run_cli("weights", "list", env={"COLUMNS": "250"})
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if MOBILENET in line)
    assert "yes" in line and "unverified" in line and "MiB" in line
    assert "md5 published by Keras" in next(line for line in listed.stdout.splitlines() if VGG in line)
    assert run_cli("weights", "verify").returncode == 0
    path = weights.weights_file("mobilenet_v2", (32, 32)).path()
    path.write_bytes(path.read_bytes()[:-1] + b"\1")
    corrupt = run_cli("weights", "verify")
    assert corrupt.returncode == 2 and "fail their check" in corrupt.stderr and MOBILENET in corrupt.stderr


@pytest.mark.parametrize("strategy", ["grid", "random"])
def test_a_sweep_needs_the_files_of_its_imagenet_trials_only(strategy):
    from runner.search.expand import imagenet_weights_needed
    from runner.spec.sweep import sweep_from_mapping

    space = [{"architecture": ["image_mlp_frozen"], "backbone": ["mobilenet_v2", "vgg16"],
              "weights": ["imagenet", "none"], "frame_size": ["32x32", "128x128"], "layer_1_size": [0, 8]},
             {"architecture": ["c3dsmall"]}]
    search = {"strategy": strategy, **({"trials": 4} if strategy != "grid" else {})}
    sweep = sweep_from_mapping({"name": "s", "data": {"root": "examples/seals"}, "space": space, "search": search},
                               "s.yaml")
    names = sorted(file.name for file in imagenet_weights_needed(sweep))
    assert names == sorted([MOBILENET, MOBILENET.replace("_224_", "_128_"), VGG])


def test_an_unreachable_or_unusable_mirror_is_one_line_with_the_recipe_and_no_password(server, tmp_path,
                                                                                          monkeypatch):
    closed = server.httpd.server_address[1]
    server.httpd.shutdown()
    server.httpd.server_close()  # nothing listens there any more: connection refused
    for mirror in (f"http://127.0.0.1:{closed}/keras-applications",
                   "http://user:s3cret@127.0.0.1:badport/keras-applications"):
        monkeypatch.setenv(weights.MIRROR_ENV, mirror)
        with pytest.raises(UserError) as refused:
            weights.fetch([weights.weights_file("vgg16")])
        message = str(refused.value)
        assert "cannot be fetched" in message and "weights fetch SWEEP_FILE --to DIR" in message
        assert "s3cret" not in message
    assert cache_files(tmp_path) == []


def test_fetch_to_a_folder_copies_a_verified_cached_file_offline_and_refuses_a_corrupt_one(server, tmp_path,
                                                                                          backbone_h5, monkeypatch):
    server.serve("mobilenet_v2", MOBILENET, backbone_h5)
    file = weights.weights_file("mobilenet_v2", (32, 32))
    weights.fetch([file])
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")  # carrying what is cached needs no network
    [carried] = weights.fetch([file], folder=tmp_path / "carry")
    assert carried.read_bytes() == backbone_h5 and server.count("mobilenet_v2", MOBILENET) == 1
    assert weights.recorded_sha256(carried) == hashlib.sha256(backbone_h5).hexdigest()
    file.path().write_bytes(backbone_h5[:-1] + b"\1")
    with pytest.raises(UserError, match="fails its check"):
        weights.fetch([file], folder=tmp_path / "carry-again")
    assert not (tmp_path / "carry-again" / MOBILENET).exists()
