"""The dataset files' digest memo: a digest is reused only for the very same file, unchanged."""

from __future__ import annotations

import hashlib
import os

from zoo.digests import file_digests


def test_a_same_size_edit_that_keeps_the_mtime_is_read_again(tmp_path):
    root, cache = tmp_path / "data", tmp_path / "cache"
    root.mkdir()
    frame = root / "frame.jpg"
    frame.write_bytes(b"first frame")
    assert file_digests(root, ["frame.jpg"], cache) == [hashlib.sha256(b"first frame").hexdigest()]
    before = frame.stat()
    frame.write_bytes(b"other frame")  # same size
    os.utime(frame, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the mtime set back
    assert frame.stat().st_size == before.st_size and frame.stat().st_mtime_ns == before.st_mtime_ns
    assert file_digests(root, ["frame.jpg"], cache) == [hashlib.sha256(b"other frame").hexdigest()]
    assert file_digests(root, ["frame.jpg"], cache) == [hashlib.sha256(b"other frame").hexdigest()]  # memo


def test_a_file_replaced_by_a_copy_with_the_same_size_and_mtime_is_read_again(tmp_path):
    root, cache = tmp_path / "data", tmp_path / "cache"
    root.mkdir()
    (root / "frame.jpg").write_bytes(b"first frame")
    file_digests(root, ["frame.jpg"], cache)
    kept = (root / "frame.jpg").stat()
    (root / "new.jpg").write_bytes(b"other frame")
    os.utime(root / "new.jpg", ns=(kept.st_atime_ns, kept.st_mtime_ns))
    os.replace(root / "new.jpg", root / "frame.jpg")
    assert file_digests(root, ["frame.jpg"], cache) == [hashlib.sha256(b"other frame").hexdigest()]
