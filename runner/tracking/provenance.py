"""Provenance: which code, environment, host and device produced a run.

Git is asked through its command line with a timeout (no git, no repository or a slow one: no tags, no error). The
tracking server is shared, so by default only the commit, branch and whether the tree is dirty are recorded; the
uncommitted diff is opt-in (--log-diff, tracking.log_diff), limited to source and config files (never files named
like secrets) and masked (zoo.secrets.mask_secrets); the environment is read from this process (importlib.metadata,
platform, TensorFlow's build info when it is already imported) and `nvidia-smi` when present. Nothing here touches
the network.
"""

from __future__ import annotations

import platform
import shutil
import socket
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from runner.backends import device, version
from zoo.secrets import mask_secrets

GIT_TIMEOUT_SECONDS = 5
COMMIT_TAG, BRANCH_TAG = "mlflow.source.git.commit", "mlflow.source.git.branch"
DIRTY_TAG = "videosweep.git.dirty"
DIFF_ARTIFACT = "git/uncommitted.diff"
MAX_DIFF_CHARS = 2**20
# What a reader of the diff needs: the code and configuration that shaped the run, nothing named like a secret.
DIFF_PATHSPEC = ("*.py", "*.yaml", "*.yml", "*.toml", "*.cfg", "*.ini",
                 *(f":(exclude,icase,glob)**/{name}" for name in ("*secret*", "*credential*", "*password*",
                                                                 "*token*", ".env*", "*.env", "*.pem", "*.key")))


def _git(folder: Path, *args: str) -> str | None:
    if shutil.which("git") is None:
        return None
    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_SECONDS, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError, UnicodeDecodeError):
        return None
    return done.stdout if done.returncode == 0 else None


def _folder(source: str) -> Path:
    path = Path(source).expanduser()
    return path.parent if not path.is_dir() else path


@lru_cache(maxsize=8)
def git_state(source: str) -> dict[str, Any] | None:
    """{commit, branch, dirty} of the repository holding the file `source`, or None outside one."""
    folder = _folder(source)
    if not folder.is_dir():
        return None
    commit = _git(folder, "rev-parse", "HEAD")
    if not commit:
        return None
    branch = (_git(folder, "rev-parse", "--abbrev-ref", "HEAD") or "").strip()
    status = _git(folder, "status", "--porcelain", "--untracked-files=no")
    return {"commit": commit.strip(), "branch": branch if branch and branch != "HEAD" else "",
            "dirty": bool(status and status.strip())}


def git_diff(source: str, webhooks: tuple[str | None, ...] = ()) -> str:
    """The uncommitted changes to the repository's source and config files (DIFF_PATHSPEC), masked: URLs,
    the webhooks given, secret-looking assignments and token-shaped strings become ***; at most
    MAX_DIFF_CHARS."""
    diff = _git(_folder(source), "diff", "--no-color", "--no-ext-diff", "--no-textconv", "HEAD", "--",
                *DIFF_PATHSPEC) or ""
    return mask_secrets(diff[:MAX_DIFF_CHARS], webhooks)


def git_tags(source: str | None) -> dict[str, str]:
    """MLflow's standard git tags plus the dirty flag; empty outside a git repository."""
    state = git_state(str(source)) if source else None
    if state is None:
        return {}
    tags = {COMMIT_TAG: state["commit"], DIRTY_TAG: str(state["dirty"]).lower()}
    if state["branch"]:
        tags[BRANCH_TAG] = state["branch"]
    return tags


def requirements_txt() -> str:
    """Every installed distribution as `name==version`, sorted (what `pip freeze` would say, without pip)."""
    seen: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata.get("Name")
        if name and name.lower() not in seen:
            seen[name.lower()] = f"{name}=={dist.version}"
    return "\n".join(seen[k] for k in sorted(seen)) + "\n"


def gpus() -> list[dict[str, str]]:
    """GPU model, memory and driver of each NVIDIA GPU (from nvidia-smi), empty without one."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,name,memory.total,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4:
            rows.append(dict(zip(("index", "name", "memory", "driver"), parts)))
    return rows


def tensorflow_build() -> dict[str, Any]:
    """TensorFlow's build info (CUDA and cuDNN versions), read from its file: importing TensorFlow takes
    seconds and would claim the GPUs in the scheduler process."""
    import ast
    from importlib.util import find_spec

    try:
        spec = find_spec("tensorflow")
    except (ImportError, ValueError):
        return {}
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(list(spec.submodule_search_locations)[0]) / "python" / "platform" / "build_info.py"
    try:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "OrderedDict" and node.args:
                return dict(ast.literal_eval(node.args[0]))
    except (OSError, SyntaxError, ValueError):
        return {}
    return {}


def environment() -> dict[str, Any]:
    """Python, Keras and its backend with versions, CUDA/cuDNN as TensorFlow was built, GPUs and the host."""
    import os

    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    env: dict[str, Any] = {
        "python": sys.version.split()[0], "python_implementation": platform.python_implementation(),
        "keras": version("keras"), "backend": backend, "backend_version": version(backend),
        "optuna": version("optuna"), "mlflow": version("mlflow") or version("mlflow-skinny"),
        "host": socket.gethostname(), "platform": platform.platform(), "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    build = tensorflow_build()
    if build:
        env["cuda_build"] = bool(build.get("is_cuda_build"))
        env["cuda"], env["cudnn"] = build.get("cuda_version"), build.get("cudnn_version")
    found = gpus()
    if found:
        env["gpus"] = found
        env["driver"] = found[0]["driver"]
    return env


def trial_tags(source: str | None, backend: str) -> dict[str, str]:
    """A child run's provenance tags: git (as the parent's), host and the device `backend` computes on."""
    return {**git_tags(source), "host": socket.gethostname(), "device": device(backend)}
