"""Where a trial keeps its files in the sweep's working folder; its checkpoint is one folder inside them."""

from __future__ import annotations

import shutil
from pathlib import Path

CHECKPOINT_FOLDER = "checkpoint"


def trial_folder(workdir: Path, key: str) -> Path:
    return Path(workdir) / "trials" / key


def remove_checkpoint(trial_dir: Path) -> None:
    """A trial that will never continue keeps no checkpoint."""
    shutil.rmtree(Path(trial_dir) / CHECKPOINT_FOLDER, ignore_errors=True)
