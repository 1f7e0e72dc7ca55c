"""Claims are exactly once under contention: processes racing for WAITING trials never take the same one."""

from __future__ import annotations

import multiprocessing as mp
from collections import Counter

import pytest

from runner.study.claims import claim_waiting
from runner.study.storage import existing_study, open_storage, open_study


def _claim_all(url: str, out: mp.Queue) -> None:
    study = existing_study("race", open_storage(url))
    taken: list = []
    try:
        while (trial := claim_waiting(study)) is not None:
            taken.append(trial.number)
            study.tell(trial, 0.0)  # raises if another process had claimed (and finished) the same trial
    except Exception as err:  # noqa: BLE001 - reported to the test
        taken.append(f"{type(err).__name__}: {err}")
    out.put(taken)


@pytest.mark.slow  # four processes racing
def test_four_processes_racing_on_sqlite_claim_every_trial_exactly_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'race.db'}"
    study = open_study("race", open_storage(url), "maximize")
    for index in range(150):
        study.enqueue_trial(params={}, user_attrs={"trial_key": f"k{index}"})
    queue: mp.Queue = mp.get_context("spawn").Queue()
    processes = [mp.get_context("spawn").Process(target=_claim_all, args=(url, queue)) for _ in range(4)]
    for process in processes:
        process.start()
    taken = [number for _ in processes for number in queue.get(timeout=300)]
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    assert not [t for t in taken if isinstance(t, str)], [t for t in taken if isinstance(t, str)][:3]
    assert sorted(taken) == list(range(150)) and max(Counter(taken).values()) == 1


def test_a_claim_records_its_start_time_in_any_time_zone(tmp_path):
    """The claim writes the start time straight into Optuna's table; Optuna 5 keeps UTC there. A worker in
    New York must not look five hours old (and be reaped as dead) or five hours young."""
    import datetime as dt
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    url = f"sqlite:///{tmp_path / 'tz.db'}"
    study = open_study("tz", open_storage(url), "maximize")
    study.enqueue_trial(params={}, user_attrs={"trial_key": "k"})
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:  # without time zone data the C library silently takes TZ=America/New_York for UTC: nothing proved
        new_york = dt.datetime.now(ZoneInfo("America/New_York")).utcoffset()
    except ZoneInfoNotFoundError:
        pytest.fail("no time zone data (install tzdata): America/New_York is unknown")
    claim = ("import time; from runner.study.claims import claim_waiting; "
             "from runner.study.storage import existing_study, open_storage; "
             f"print(claim_waiting(existing_study('tz', open_storage({url!r}))).number, time.localtime().tm_gmtoff)")
    result = subprocess.run([sys.executable, "-c", claim], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "TZ": "America/New_York"})
    number, offset = result.stdout.split()
    assert number == "0", result.stderr
    assert int(offset) == new_york.total_seconds() < 0, "the claiming process did not run in New York time"
    started = existing_study("tz", open_storage(url)).trials[0].datetime_start  # naive local time, read here
    assert abs((dt.datetime.now() - started).total_seconds()) < 60, started


def test_twins_enqueued_by_two_processes_train_once_per_rung(tmp_path):
    """A study lock lost with a dropped connection lets two processes enqueue the same point (or promotion): the
    later twin is refused by whoever claims it, whatever the order of the claims, and never re-queued."""
    from optuna.trial import TrialState

    from runner.study.claims import REFUSED_ATTR, RUNG_ATTR, claim_from_queue, enqueue, requeue_failed
    from runner.spec.trial_spec import TrialSpec

    spec = TrialSpec.from_flat({"architecture": "image_mlp_frozen", "backbone": "mobilenet_v2", "weights": "none"})
    other = TrialSpec.from_flat({"architecture": "image_mlp_frozen", "backbone": "vgg16", "weights": "none"})
    study = open_study("twins", open_storage(f"sqlite:///{tmp_path / 'twins.db'}"), "maximize")
    for rung in (0, 0, 1, 1):
        enqueue(study, spec.key("data"), spec, **{RUNG_ATTR: rung})
    enqueue(study, other.key("data"), other)
    claimed = []
    while (claim := claim_from_queue(study, rank=lambda t: -t.number)) is not None:  # later twins first
        claimed.append(claim.trial.number)
        study.tell(claim.trial, 0.5)
    assert sorted(claimed) == [0, 2, 4], "each key once at each rung"
    refused = {t.number: t.user_attrs["failure"] for t in study.get_trials() if t.user_attrs.get(REFUSED_ATTR)}
    assert refused == {1: f"refused: trial #0 already stands for {spec.key('data')} at rung 0",
                       3: f"refused: trial #2 already stands for {spec.key('data')} at rung 1"}
    assert all(t.state == TrialState.FAIL for t in study.get_trials() if t.number in refused)
    assert requeue_failed(study, max_retries=3) == 0


# ---------------------------------------------------------------- what a claim trusts of the shared study

PLANTED = {"architecture": "image_mlp_frozen", "backbone": "mobilenet_v2", "frame_size": "32x32",
           "weights": "/home/someone/planted.weights.h5"}


def test_a_claim_loads_only_files_the_sweep_file_names_and_refuses_malformed_attributes():
    from runner.study.claims import _checked_claim, malformed
    from runner.spec.trial_spec import TrialSpec
    from zoo.errors import UserError

    spec = TrialSpec.from_flat(PLANTED)
    attrs = {"trial_key": spec.key("data"), "params": spec.flat(), "attempt": 0}
    named = frozenset({("weights", "/home/someone/planted.weights.h5")})
    assert _checked_claim(None, attrs, "data", named).spec == spec  # the sweep file names that very file
    with pytest.raises(UserError, match="refused: .* would load weights /home/someone/planted.weights.h5, a file "
                                        "the sweep file does not name"):
        _checked_claim(None, attrs, "data", frozenset())  # anyone can compute the key: it proves nothing
    for name, value in (("rung", "x"), ("attempt", -1), ("epoch_budget", True), ("rung", 1.5)):
        assert malformed({**attrs, name: value}) == f"{name} {str(value)!r} is not a whole number"
        with pytest.raises(UserError, match=f"refused: trial {attrs['trial_key']}'s {name} "):
            _checked_claim(None, {**attrs, name: value}, "data", named)
    assert malformed({**attrs, "params": "x"}) == "its params are not a mapping"
    assert malformed({**attrs, "rung": 2, "epoch_budget": 9}) is None


def test_a_sweep_names_the_files_its_space_gives():
    from runner.spec.sweep import sweep_from_mapping

    sweep = sweep_from_mapping({"name": "s", "data": {"root": "d"}, "space": [
        {"architecture": "video_lrcnn_trainable", "weights": ["imagenet", " /w/a.h5"], "model_weights_path": "/w/m.h5"},
        {"architecture": "image_mlp_frozen", "weights": None}]}, "s.yaml")
    assert sweep.named_files() == {("weights", "imagenet"), ("weights", "/w/a.h5"), ("model_weights_path", "/w/m.h5")}
