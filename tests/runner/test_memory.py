"""Out of memory, the parts that need no training: recognising it in an exception or a killed worker, and the
retry it gets (or not) on a real Optuna study."""

from __future__ import annotations

import signal

import optuna
from optuna.trial import TrialState

from runner import memory
from runner.study.claims import KEY_ATTR, next_attempt

KEY = "0123456789ab"


class ResourceExhaustedError(Exception):
    """Named as TensorFlow's allocator error: recognised by name, no backend imported."""


class XlaRuntimeError(Exception):
    """Named as JAX's runtime error, which says RESOURCE_EXHAUSTED when the accelerator is full."""


def test_out_of_memory_is_recognised_by_kind_name_and_message_also_when_wrapped():
    assert memory.is_out_of_memory(MemoryError())
    assert memory.is_out_of_memory(ResourceExhaustedError("OOM when allocating tensor"))
    assert memory.is_out_of_memory(XlaRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 4 GiB"))
    try:
        try:
            raise MemoryError()
        except MemoryError as err:
            raise RuntimeError("training failed") from err
    except RuntimeError as wrapped:
        assert memory.is_out_of_memory(wrapped)
    assert not memory.is_out_of_memory(XlaRuntimeError("INVALID_ARGUMENT: shapes differ"))
    assert not memory.is_out_of_memory(ValueError("out of memory"))  # a user's ValueError is not an allocator's


def test_a_sigkill_is_out_of_memory_past_the_limit_or_when_the_oom_killer_counted_it():
    kill = -signal.SIGKILL
    assert memory.killed_by_memory(kill, peak_mb=900, limit_mb=800, kills_before=None, kills_now=None)
    assert not memory.killed_by_memory(kill, peak_mb=700, limit_mb=800, kills_before=None, kills_now=None)
    assert memory.killed_by_memory(kill, peak_mb=700, limit_mb=None, kills_before=3, kills_now=4)
    assert not memory.killed_by_memory(kill, peak_mb=700, limit_mb=None, kills_before=3, kills_now=3)
    assert not memory.killed_by_memory(-signal.SIGSEGV, peak_mb=900, limit_mb=800, kills_before=3, kills_now=4)


def failed(study: optuna.Study, **attrs) -> None:
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={
        KEY_ATTR: KEY, "params": {"batch_size": 64}, "failure": "x", **attrs}))


def test_an_oom_is_never_retried_the_same_way_and_halving_uses_up_no_retry():
    study = optuna.create_study()
    failed(study, **memory.oom_attrs(64, "fail", 900.0))
    assert next_attempt(study.trials, max_retries=5) is None  # on_oom: fail, whatever the retries left
    study = optuna.create_study()
    failed(study, **memory.oom_attrs(64, "retry_smaller_batch", 900.0))
    attrs = next_attempt(study.trials, max_retries=0)
    assert attrs is not None and attrs[memory.BATCH_ATTR] == 32
    assert not set(memory.OOM_ATTRS) & set(attrs)  # the retry is not itself an oom
    failed(study, **{memory.BATCH_ATTR: 32}, **memory.oom_attrs(32, "retry_smaller_batch", 500.0))
    assert next_attempt(study.trials, max_retries=0)[memory.BATCH_ATTR] == 16
    failed(study, **{memory.BATCH_ATTR: 16})  # an ordinary failure at 16: that one uses up the retry
    assert next_attempt(study.trials, max_retries=0) is None
    again = next_attempt(study.trials, max_retries=1)
    assert again is not None and again[memory.BATCH_ATTR] == 16 and again["attempt"] == 1  # stays at 16
    study = optuna.create_study()
    failed(study, **{memory.BATCH_ATTR: 1}, **memory.oom_attrs(1, "retry_smaller_batch", 900.0))
    assert next_attempt(study.trials, max_retries=3) is None  # nothing smaller than 1


def test_the_batch_a_study_trial_trains_with():
    assert memory.batch_of({"params": {"batch_size": 64}}) == 64
    assert memory.batch_of({"params": {"batch_size": 64}, memory.BATCH_ATTR: 16}) == 16
    assert memory.batch_of({"params": "planted"}) == 32 and memory.batch_of({memory.BATCH_ATTR: True}) == 32
