"""Loading and validating datasets against the real seals frames; each bad input names what is wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from zoo.data import load_dataset, natural_key
from zoo.errors import DataError
from zoo.frames import read_frame, read_frames


def test_loads_the_bundled_seals_with_crlf_labels(seals: Path):
    assert b"\r\n" in (seals / "labels.csv").read_bytes()
    dataset = load_dataset(seals)
    assert len(dataset.labels) == 725
    assert dataset.classes == ["noseal", "seal"]
    assert dataset.split_videos("train") == ["s26-8164"]
    assert dataset.class_counts()["test"] == {"noseal": 152, "seal": 133}
    assert dataset.frame_paths[0].name == "s26-8164-00001.jpeg"
    assert dataset.video_rows("s27-8212") == slice(266, 440)


def test_fingerprint_follows_labels_and_frames(dataset_copy):
    root = dataset_copy()
    first = load_dataset(root)
    assert load_dataset(root).fingerprint == first.fingerprint
    table = pd.read_csv(root / "labels.csv", dtype=str)
    table.loc[0, "label"] = "seal" if table.loc[0, "label"] == "noseal" else "noseal"
    table.to_csv(root / "labels.csv", index=False)
    relabelled = load_dataset(root)
    assert relabelled.fingerprint != first.fingerprint
    assert relabelled.frames_fingerprint == first.frames_fingerprint  # features stay valid


def test_missing_trailing_newline_and_natural_frame_order(dataset_copy):
    root = dataset_copy()
    table = pd.read_csv(root / "labels.csv", dtype=str).iloc[::-1]
    (root / "labels.csv").write_text(table.to_csv(index=False).rstrip("\n"))
    dataset = load_dataset(root)
    frames = list(dataset.labels.frame[dataset.video_rows("s26-8164")])
    assert frames == sorted(frames, key=natural_key)


def _rewrite(root: Path, change) -> None:
    table = pd.read_csv(root / "labels.csv", dtype=str)
    change(table).to_csv(root / "labels.csv", index=False)


@pytest.mark.parametrize("change, message", [
    (lambda t: t.assign(split=t.split.where(t.index != 3, "holdout")), "unknown split 'holdout' in row 5"),
    (lambda t: t.assign(split=t.split.where(t.index != 0, "test")), "video(s) in more than one split: s26-8164"),
    (lambda t: t.assign(label="seal"), "only one class (seal)"),
    (lambda t: t.drop(columns="split"), "missing column(s) split"),
    (lambda t: pd.concat([t, t.iloc[[0]]]), "frame listed twice: s26-8164-00001.jpeg"),
    (lambda t: t[t.split != "valid"], "no frames in the valid split"),
    (lambda t: pd.concat([t, pd.DataFrame([{"video": "s26-8164", "frame": "ghost.jpeg", "label": "seal",
                                            "split": "train"}])]), "missing on disk: s26-8164/ghost.jpeg"),
    (lambda t: t.drop(index=2), "have no row in labels.csv: s26-8164/s26-8164-00003.jpeg"),
])
def test_bad_labels_are_refused_with_the_offending_rows(dataset_copy, change, message):
    root = dataset_copy()
    _rewrite(root, change)
    with pytest.raises(DataError) as raised:
        load_dataset(root)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_missing_folder_and_labels(tmp_path: Path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="labels file .* does not exist"):
        load_dataset(tmp_path / "empty")


def test_frames_decode_to_rgb_at_the_requested_size(seals: Path):
    import cv2

    path = seals / "s26-8164" / "s26-8164-00001.jpeg"
    frame = read_frame(path, (40, 30))
    assert frame.shape == (30, 40, 3) and frame.dtype == np.uint8
    full = cv2.cvtColor(cv2.resize(cv2.imread(str(path)), (40, 30), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    assert np.abs(frame.astype(int) - full.astype(int)).mean() < 3  # reduced-scale decode is a faithful shortcut
    batch = read_frames([path] * 5, (40, 30))
    assert batch.shape == (5, 30, 40, 3) and (batch == frame).all()


def test_unreadable_image_is_named(dataset_copy):
    root = dataset_copy()
    victim = root / "s27-8212" / "s27-8212-00002.jpeg"
    victim.unlink()
    victim.write_bytes(b"not a jpeg")
    dataset = load_dataset(root)
    with pytest.raises(DataError, match="cannot read image .*s27-8212-00002.jpeg"):
        read_frames(dataset.frame_paths, (32, 32))


def test_the_vectorised_order_is_natural_key_order_with_ties_in_row_order():
    import random

    import pandas as pd

    from zoo.data import natural_order

    names = ["f1", "f01", "f2", "f10", "g3", "x", "f9a", "f9", "f-1", "f.1", "f!2", "a", "a1", "ab1", "a1b",
             "a1b2", "f0", "f00", "f" + "9" * 30, "f1" + "0" * 30]
    rng = random.Random(1)
    table = pd.DataFrame([(rng.choice("bac"), rng.choice(names)) for _ in range(500)], columns=["video", "frame"])
    expected = sorted(range(len(table)), key=lambda i: (table.video.iat[i], natural_key(table.frame.iat[i])))
    assert list(natural_order(table)) == expected
