"""Content digests of dataset files, memoised per machine so unchanged files are not read again.

The memo is one JSON file per dataset folder in the cache folder, mapping each file's relative name to (size,
mtime_ns, inode, ctime_ns, sha256). A digest is reused only while the file's absolute path, size, mtime_ns, inode
and ctime_ns are unchanged (an edit that keeps the size and sets the mtime back, as `touch -r` or `cp -p` do, still
changes the ctime; a file replaced by another gets a new inode); times only decide what to re-read, never the digest
itself, so byte-identical copies of a dataset on other machines get the same digests. The memo is written atomically
and is only a speed-up: a memo that cannot be read or written is ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from zoo import atomic
from zoo.cache import cache_root

MEMO_VERSION = 2  # 2: entries keyed on inode and ctime too
_READERS = 8  # hashlib releases the GIL: threads overlap reading and hashing


def _memo_path(root: Path, cache_dir: str | Path | None) -> Path:
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return cache_root(cache_dir) / "digests" / f"{key}.json"


def _read_memo(path: Path, root: Path) -> dict[str, list]:
    try:
        memo = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    ok = isinstance(memo, dict) and memo.get("version") == MEMO_VERSION and memo.get("root") == str(root.resolve())
    return memo.get("files", {}) if ok else {}


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _identity(stat: os.stat_result) -> list[int]:
    """What must not change for a memoised digest to stand: size, mtime, inode and ctime (ctime cannot be set
    back by the file's owner)."""
    return [stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns]


def file_digests(root: Path, names: list[str], cache_dir: str | Path | None = None) -> list[str]:
    """sha256 of each `root/name`, in order; only files new or changed since the memo was written are read."""
    memo_path = _memo_path(root, cache_dir)
    memo = _read_memo(memo_path, root)
    stats = [(root / name).stat() for name in names]
    keys = [_identity(stat) for stat in stats]
    stale = [i for i, name in enumerate(names) if memo.get(name, [])[:-1] != keys[i]]
    with ThreadPoolExecutor(_READERS) as pool:
        fresh = dict(zip(stale, pool.map(_sha256, (root / names[i] for i in stale))))
    digests = [fresh[i] if i in fresh else memo[name][-1] for i, name in enumerate(names)]
    if stale or len(memo) != len(names):
        files = {name: [*key, digest] for name, key, digest in zip(names, keys, digests)}
        try:
            memo_text = json.dumps({"version": MEMO_VERSION, "root": str(root.resolve()), "files": files},
                                   separators=(",", ":"))
            atomic.write_text(memo_path, memo_text)
        except OSError:
            pass  # a read-only cache only costs the next run a re-read
    return digests
