"""Lazy windows against a brute-force reference built the research code's way (materialised copies)."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.data import load_dataset
from zoo.windows import WindowSequence, gather_windows, window_ends


def brute_force(dataset, source, split, length):
    windows, labels = [], []
    for video in dataset.split_videos(split):
        rows = list(range(dataset.video_rows(video).start, dataset.video_rows(video).stop))
        for i in range(len(rows) - length + 1):
            chunk = rows[i : i + length]
            windows.append(np.stack([source[r] for r in chunk]))
            labels.append(dataset.label_indices[chunk[-1]])
    return np.array(windows), np.array(labels)


@pytest.mark.parametrize("length", [1, 2, 7, 20])
@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_windows_match_the_brute_force_reference(seals, split, length):
    dataset = load_dataset(seals)
    source = np.arange(len(dataset.labels) * 3, dtype=np.float32).reshape(-1, 3)
    expected_x, expected_y = brute_force(dataset, source, split, length)
    ends = window_ends(dataset, split, length)
    assert len(ends) == len(expected_x)
    got = gather_windows(source, ends, length, windowed=True)
    np.testing.assert_array_equal(got, expected_x)
    np.testing.assert_array_equal(dataset.label_indices[ends], expected_y)


def test_windows_never_cross_videos(tiny_seals):
    dataset = load_dataset(tiny_seals)
    videos = dataset.labels.video.to_numpy()
    for split in ("train", "valid", "test"):
        ends = window_ends(dataset, split, 5)
        assert all(len(set(videos[e - 4 : e + 1])) == 1 for e in ends)


def test_sequence_batches_cover_every_window_once_and_reshuffle(seals):
    dataset = load_dataset(seals)
    source = np.arange(len(dataset.labels), dtype=np.float32)[:, None]
    ends = window_ends(dataset, "train", 4)
    sequence = WindowSequence(source, ends, dataset.label_indices, 2, 4, True, 32, shuffle=True, seed=1)
    seen = np.concatenate([sequence[i][0][:, -1, 0] for i in range(len(sequence))]).astype(int)
    assert sorted(seen) == sorted(ends)
    first_order = sequence._order.copy()
    sequence.on_epoch_end()
    assert not np.array_equal(first_order, sequence._order)
    x, y = sequence[0]
    assert x.shape == (32, 4, 1) and y.shape == (32, 2) and (y.sum(axis=1) == 1).all()


def test_windows_read_from_a_memory_mapped_cache(tmp_path, seals):
    dataset = load_dataset(seals)
    array = np.random.default_rng(0).normal(size=(len(dataset.labels), 8)).astype(np.float32)
    np.save(tmp_path / "f.npy", array)
    mapped = np.load(tmp_path / "f.npy", mmap_mode="r")
    ends = window_ends(dataset, "test", 6)
    np.testing.assert_array_equal(gather_windows(mapped, ends, 6, True), gather_windows(array, ends, 6, True))


@pytest.mark.parametrize("length", [1, 5, 20])
def test_baselines_count_the_windows_trials_are_evaluated_on(seals, length):
    from zoo.baselines import window_baselines

    dataset = load_dataset(seals)
    baselines = window_baselines(dataset, length)
    assert list(baselines) == ["train", "val", "test"]
    for split, name in (("train", "train"), ("valid", "val"), ("test", "test")):
        # the reference counts labels.csv directly: the last frame's label of every full window of each video
        frames = dataset.labels[dataset.labels.split == split]
        labels = frames.groupby("video", sort=False).label.apply(lambda v: v.iloc[length - 1:]).value_counts()
        got = baselines[name]
        assert got.windows == labels.sum() and got.majority_class == labels.idxmax()
        assert got.majority_accuracy == pytest.approx(labels.max() / labels.sum()) and got.chance == 0.5
        assert got.effective_units == 1.0  # one video per split: its windows are one unit's worth of evidence
    if length == 1:  # every labelled frame: labels.csv's own shares (noseal 91 of 174 val, 152 of 285 test)
        assert baselines["val"].majority_accuracy == pytest.approx(91 / 174)
        assert baselines["test"].majority_accuracy == pytest.approx(152 / 285)


def test_effective_units_weigh_videos_by_their_windows():
    from zoo.baselines import effective_units

    assert effective_units(np.array(["a"] * 5 + ["b"] * 5)) == 2.0
    assert effective_units(np.array(["a"] * 3 + ["b"])) == pytest.approx(16 / 10)  # a long video dominates
    assert effective_units(np.arange(7)) == 7.0  # independent windows
