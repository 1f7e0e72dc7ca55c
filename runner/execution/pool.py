"""A resident worker pool: a process per worker setup that has imported its backend once and forks ready workers
for every `run` of this user on this machine, so a sweep's first trial starts without a TensorFlow import.

`videosweep pool start` starts one server per setup the machine's slots need (`serve`); `run`, `resume` and
`worker` fork their workers from it when one answers for their setup (`PoolClient.connect`), and spawn them as
before otherwise. A forked worker is the same `worker_main` as a spawned one, with the sweep's environment,
working folder, stdout/stderr and event pipe handed over the socket. Its server reports how it exited (the
scheduler reads death reasons from exit codes) and SIGKILLs the workers of a `run` whose connection drops (a
killed `run` takes its workers with it, as its process group would). The socket lives in a private folder and
answers only a client that knows the folder's key (HMAC challenge), since what it receives runs as code.
A server leaves after `idle_seconds` with no client and no worker, or on `pool stop` once its workers are done.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import pickle
import secrets
import select
import selectors
import signal
import socket
import struct
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from runner import backends
from runner.execution.worker import ProcessSetup, WorkerConfig
from zoo.atomic import private_dir
from zoo.errors import UserError

DIR_ENV = "VIDEOSWEEP_POOL_DIR"
# Environment read when the backend is imported: a server serves only clients whose values match its own.
IMPORT_TIME_ENV = ("TF_", "XLA_", "JAX_", "KERAS_", "CUDA_", "OMP_", "MKL_", "NVIDIA_", "TORCH", "PYTHON", "LD_")
SOURCES = ("runner", "zoo", "reports", "videosweep")  # code a server holds imported: an edit means a new server
DISTRIBUTIONS = ("keras", "tensorflow", "tensorflow-cpu", "jax", "jaxlib", "torch", "mlflow", "optuna")
IDLE_SECONDS = 3600.0
TICK_SECONDS = 0.2
_SOCKET_PATH_MAX = 100  # AF_UNIX paths are limited to 107 bytes on Linux


def _folder() -> Path:
    given = os.environ.get(DIR_ENV)
    return Path(given) if given else Path(tempfile.gettempdir()) / f"videosweep-pool-{os.getuid()}"


def pool_dir() -> Path:
    """Where servers listen: $VIDEOSWEEP_POOL_DIR, else a private folder per user in the temporary folder."""
    return private_dir(_folder(), "worker pool folder")


def pool_started() -> bool:
    """Whether a server may be listening (cheap: nothing is created, no code is fingerprinted)."""
    folder = _folder()
    return (folder / "key").is_file() and any(folder.glob("*.sock"))


def _auth_key(folder: Path, create: bool) -> bytes | None:
    """The folder's secret (32 random bytes, 0600): written whole under another name, then linked into place, so
    two processes creating it at once agree on one."""
    path = folder / "key"
    if not path.exists():
        if not create:
            return None
        draft = folder / f".key.{os.getpid()}.{secrets.token_hex(4)}"
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(secrets.token_bytes(32))
        try:
            os.link(draft, path)
        except FileExistsError:  # another process made it first: theirs it is
            pass
        finally:
            draft.unlink()
    return path.read_bytes()


def code_fingerprint() -> str:
    """Our sources (path, size, mtime) and the installed backends' versions: what a server has imported."""
    digest = hashlib.sha256(sys.executable.encode())
    root = Path(__file__).resolve().parents[2]
    for package in SOURCES:
        for source in sorted((root / package).rglob("*.py")):
            found = source.stat()
            digest.update(f"{source.relative_to(root)}:{found.st_size}:{found.st_mtime_ns}\n".encode())
    for distribution in DISTRIBUTIONS:
        try:
            digest.update(f"{distribution}=={metadata.version(distribution)}\n".encode())
        except metadata.PackageNotFoundError:
            pass
    return digest.hexdigest()


def setup_key(setup: ProcessSetup, fingerprint: str | None = None) -> str:
    """A short name for what a server must match: the code, the process setup and the import-time environment
    (the variables the setup itself sets are part of the setup)."""
    own = backends.slot_environment(setup.backend, setup.gpu, setup.trials_per_gpu, setup.cpu_threads)
    environment = sorted((name, value) for name, value in os.environ.items()
                         if name.startswith(IMPORT_TIME_ENV) and name not in own)
    payload = json.dumps([fingerprint or code_fingerprint(), asdict(setup), environment], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def socket_path(folder: Path, key: str) -> Path:
    path = folder / f"{key}.sock"
    if len(str(path)) > _SOCKET_PATH_MAX:
        raise UserError(f"worker pool folder {folder} is too long a path for a socket; set {DIR_ENV} to a shorter one")
    return path


# Messages: a 4-byte length, then a pickle (only between processes that proved they hold the folder's key).
def _send(sock: socket.socket, message: Any, fds: list[int] | None = None) -> None:
    data = pickle.dumps(message)
    frame = struct.pack("!I", len(data)) + data
    if fds:
        socket.send_fds(sock, [frame], fds)
    else:
        sock.sendall(frame)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError("connection closed")
        data += chunk
    return data


def _recv(sock: socket.socket, with_fds: int = 0) -> tuple[Any, list[int]]:
    fds: list[int] = []
    if with_fds:
        head, fds, _, _ = socket.recv_fds(sock, 4, with_fds)
        if not head:
            raise EOFError("connection closed")
        head += _recv_exactly(sock, 4 - len(head))
    else:
        head = _recv_exactly(sock, 4)
    (size,) = struct.unpack("!I", head)
    return pickle.loads(_recv_exactly(sock, size)), list(fds)  # noqa: S301 - an authenticated peer of this user


def _challenge(sock: socket.socket, key: bytes) -> bool:
    nonce = secrets.token_bytes(32)
    sock.sendall(nonce)
    answer = _recv_exactly(sock, 32)
    return hmac.compare_digest(answer, hmac.new(key, nonce, hashlib.sha256).digest())


def _answer(sock: socket.socket, key: bytes) -> None:
    nonce = _recv_exactly(sock, 32)
    sock.sendall(hmac.new(key, nonce, hashlib.sha256).digest())


def exit_code(status: int) -> int:
    """A wait status as multiprocessing writes exit codes: the code, or minus the signal that ended it."""
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


# ---- the server ---------------------------------------------------------------------------------------------------

@dataclass
class _Client:
    sock: socket.socket
    workers: set[int] = field(default_factory=set)


class PoolServer:
    """One setup's resident process: imported once, forks a worker per request, reaps and reports them."""

    def __init__(self, setup: ProcessSetup, idle_seconds: float = IDLE_SECONDS):
        self.setup, self.idle_seconds = setup, idle_seconds
        self.folder = pool_dir()
        self.key = _auth_key(self.folder, create=True) or b""
        self.path = socket_path(self.folder, setup_key(setup))
        self.clients: dict[int, _Client] = {}
        self.owner: dict[int, _Client] = {}  # worker pid -> the client it was forked for
        self.started, self.last_busy, self.forked = time.time(), time.monotonic(), 0
        self.stopping = False

    def serve(self) -> None:
        from runner.execution.worker import preload

        preload(self.setup, everything=True)  # the imports every forked worker skips
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.path.unlink(missing_ok=True)
        listener.bind(str(self.path))
        os.chmod(self.path, 0o600)
        bound = self.path.stat().st_ino  # a later server for the same setup may have replaced the file
        listener.listen(16)
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, selectors.EVENT_READ)
        self.listener = listener
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        try:
            while not self._done():
                for ready, _ in self.selector.select(TICK_SECONDS):
                    if ready.fileobj is listener:
                        self._accept()
                    else:
                        self._serve_one(self.clients[ready.fd])
                self._reap()
        finally:
            if self.path.exists() and self.path.stat().st_ino == bound:
                self.path.unlink()
            listener.close()

    def _done(self) -> bool:
        if self.clients or self.owner:
            self.last_busy = time.monotonic()
            return False
        return self.stopping or time.monotonic() - self.last_busy > self.idle_seconds

    def _accept(self) -> None:
        sock, _ = self.listener.accept()
        sock.settimeout(5)
        try:
            if self.stopping or not _challenge(sock, self.key):
                raise OSError("refused")
            _send(sock, ("ready", os.getpid()))
        except (OSError, EOFError):
            sock.close()
            return
        sock.settimeout(30)  # a message that starts arriving is read whole; a client stuck mid-message is dropped
        self.clients[sock.fileno()] = _Client(sock)
        self.selector.register(sock, selectors.EVENT_READ)

    def _serve_one(self, client: _Client) -> None:
        try:
            message, fds = _recv(client.sock, with_fds=3)
        except (OSError, EOFError, pickle.UnpicklingError):
            self._drop(client)
            return
        try:
            if message[0] == "fork":
                _send(client.sock, ("forked", self._fork(client, *message[1:], fds=fds)))
            elif message[0] == "status":
                _send(client.sock, ("status", self.describe()))
            elif message[0] == "stop":
                self.stopping = True
                _send(client.sock, ("stopping", sorted(self.owner)))
        except (OSError, TypeError, ValueError, IndexError):  # gone, or a message this server does not read
            self._drop(client)
        finally:
            for descriptor in fds:
                os.close(descriptor)

    def _fork(self, client: _Client, config: WorkerConfig, environ: dict[str, str], cwd: str, *,
              fds: list[int]) -> int:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self._become_worker(config, environ, cwd, fds)
        client.workers.add(pid)
        self.owner[pid] = client
        self.forked += 1
        return pid

    def _become_worker(self, config: WorkerConfig, environ: dict[str, str], cwd: str, fds: list[int]) -> None:
        """In the forked child: take the client's stdout, stderr, environment and folder, then work."""
        from runner.execution.worker import worker_main

        try:
            self.selector.close()
            self.listener.close()
            for other in self.clients.values():
                other.sock.close()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            stdout, stderr, events = fds
            os.dup2(stdout, 1)
            os.dup2(stderr, 2)
            os.close(stdout)
            os.close(stderr)
            os.environ.clear()
            os.environ.update(environ)
            os.chdir(cwd)
            worker_main(replace(config, events=Connection(events)))
        finally:
            os._exit(1)

    def _drop(self, client: _Client) -> None:
        """A client gone (its `run` ended or was killed): the workers still running for it go too."""
        self.selector.unregister(client.sock)
        self.clients.pop(client.sock.fileno(), None)
        client.sock.close()
        for pid in client.workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            client = self.owner.pop(pid, None)
            if client is None:
                continue
            client.workers.discard(pid)
            if client.sock.fileno() in self.clients:
                try:
                    _send(client.sock, ("exited", pid, exit_code(status)))
                except OSError:
                    self._drop(client)

    def describe(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "setup": asdict(self.setup), "clients": len(self.clients) - 1,  # not the asker
                "workers": sorted(self.owner), "forked": self.forked, "up_seconds": time.time() - self.started,
                "idle_seconds": self.idle_seconds}


# ---- the client ---------------------------------------------------------------------------------------------------

class PoolClient:
    """A connection to one setup's server, forking workers for one scheduler and reading how they exited."""

    def __init__(self, sock: socket.socket, server_pid: int):
        self.sock, self.server_pid = sock, server_pid
        self.exits: dict[int, int] = {}
        self.lost = False

    @classmethod
    def connect(cls, setup: ProcessSetup, fingerprint: str | None = None) -> PoolClient | None:
        """The server for `setup` if one answers, else None (no pool started, or one for other code)."""
        try:
            folder = pool_dir()
            key = _auth_key(folder, create=False)
            path = socket_path(folder, setup_key(setup, fingerprint))
        except UserError:
            return None
        if key is None or not path.exists():
            return None
        return cls.at(path, key)

    @classmethod
    def at(cls, path: Path, key: bytes) -> PoolClient | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(10)
            sock.connect(str(path))
            _answer(sock, key)
            message, _ = _recv(sock)
            sock.settimeout(None)
        except (OSError, EOFError, pickle.UnpicklingError):
            sock.close()
            return None
        return cls(sock, message[1]) if message[0] == "ready" else None

    def fork(self, config: WorkerConfig, events_writer: Connection) -> ForkedWorker:
        """A worker forked for `config`, writing its events to `events_writer`; OSError when the server is gone."""
        _send(self.sock, ("fork", replace(config, events=None), dict(os.environ), os.getcwd()),
              [sys.stdout.fileno(), sys.stderr.fileno(), events_writer.fileno()])
        return ForkedWorker(self, self._expect("forked"))

    def request(self, kind: str) -> Any:
        _send(self.sock, (kind,))
        return self._expect({"status": "status", "stop": "stopping"}[kind])

    def _expect(self, kind: str) -> Any:
        while True:
            message = self._read(block=True)
            if message is None:
                raise OSError("the worker pool server is gone")
            if message[0] == kind:
                return message[1]

    def _read(self, block: bool) -> Any:
        """One message (an exit is recorded on the way); None when none is waiting, or the server is gone."""
        if self.lost:
            return None
        if not block and not select.select([self.sock], [], [], 0)[0]:
            return None
        try:
            message, _ = _recv(self.sock)  # the server writes whole frames: a readable socket has one coming
        except (OSError, EOFError, pickle.UnpicklingError):
            self.lost = True
            return None
        if message[0] == "exited":
            self.exits[message[1]] = message[2]
        return message

    def pump(self) -> None:
        while self._read(block=False) is not None:
            pass

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> PoolClient:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


class ForkedWorker:
    """The scheduler's handle on a forked worker, shaped like multiprocessing.Process where it is used."""

    def __init__(self, client: PoolClient, pid: int):
        self.client, self.pid = client, pid

    @property
    def exitcode(self) -> int | None:
        self.client.pump()
        if self.pid in self.client.exits:
            return self.client.exits[self.pid]
        if self.client.lost and not _running(self.pid):
            return 1  # its server is gone too: how it ended is not known
        return None

    def is_alive(self) -> bool:
        return self.exitcode is None

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_alive() and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.02)

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _running(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# ---- starting, listing and stopping servers -----------------------------------------------------------------------

def start(setups: list[ProcessSetup], idle_seconds: float = IDLE_SECONDS,
          wait_seconds: float = 120.0) -> list[tuple[int, bool]]:
    """A server for each setup, started detached (all at once) unless one answers already: (its pid, whether it
    was started now) per setup. Two `pool start`s at once start one server per setup (a lock in the folder)."""
    import fcntl

    folder = pool_dir()
    _auth_key(folder, create=True)
    fingerprint = code_fingerprint()  # once: the wait below connects every 0.1 s
    with open(folder / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        running = {setup: PoolClient.connect(setup, fingerprint) for setup in setups}
        launched = {setup: _launch(setup, folder / f"{setup_key(setup, fingerprint)}.log", idle_seconds)
                    for setup, client in running.items() if client is None}
        found = []
        for setup, client in running.items():
            if client is not None:
                client.close()
                found.append((client.server_pid, False))
            else:
                found.append((_answering(setup, fingerprint, *launched[setup], wait_seconds), True))
        return found


def _launch(setup: ProcessSetup, log: Path, idle_seconds: float) -> tuple[Any, Path]:
    import subprocess

    with open(log, "ab") as out:
        command = [sys.executable, "-m", "runner.execution.pool", json.dumps(asdict(setup)), str(idle_seconds)]
        server = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
                                  cwd=Path(__file__).resolve().parents[2])
    return server, log


def _answering(setup: ProcessSetup, fingerprint: str, server: Any, log: Path, wait_seconds: float) -> int:
    """The pid of the launched `server` once it answers; a one-line UserError naming its log if it does not."""
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        client = PoolClient.connect(setup, fingerprint)
        if client is not None:
            client.close()
            return client.server_pid
        if server.poll() is not None:
            raise UserError(f"the worker pool server exited with code {server.returncode}; its log: {log}")
        time.sleep(0.1)
    server.kill()
    raise UserError(f"the worker pool server did not answer within {wait_seconds:g} s; its log: {log}")


def servers() -> list[tuple[Path, PoolClient | None]]:
    """Every socket in the pool folder with a connection to its server (None: it does not answer)."""
    folder = pool_dir()
    key = _auth_key(folder, create=False)
    found = []
    for path in sorted(folder.glob("*.sock")):
        found.append((path, PoolClient.at(path, key) if key is not None else None))
    return found


def main(argv: list[str]) -> None:
    """`python -m runner.execution.pool SETUP_JSON IDLE_SECONDS`: what `start` runs, detached."""
    setup = ProcessSetup(**json.loads(argv[0]))
    PoolServer(setup, float(argv[1])).serve()


if __name__ == "__main__":
    main(sys.argv[1:])
