"""The runner: sweeps, what to try next, where and how trials run, and what is recorded of them."""

import os

# Offline by default: MLflow 3 sends usage telemetry to the internet unless told not to. A user who wants it
# sets MLFLOW_DISABLE_TELEMETRY=false; every process we start (workers, `mlflow ui`) inherits the choice.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# The artefact store is shared, not trusted: MLflow must never unpickle what it holds. Set on importing the runner
# (every command does, `predict models:/...` included), so every process we start inherits it.
os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
