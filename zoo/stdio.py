"""Keeping native libraries' chatter (TensorFlow Lite, absl) off the user's terminal unless something fails."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 to a temporary file for the block; replay it if the block raises."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            capture.seek(0)
            sys.stderr.write(capture.read().decode(errors="replace")[-4000:])
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def import_tensorflow() -> object:
    """Import TensorFlow with its start-up banner (absl/oneDNN INFO lines that ignore TF_CPP_MIN_LOG_LEVEL) hidden."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    with quiet_stderr():
        import tensorflow

        tensorflow.get_logger().setLevel("ERROR")
    return tensorflow
