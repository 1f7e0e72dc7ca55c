"""Pure report pieces on hand-made tables: mixed architectures leave parameters missing (NaN) for some rows."""

from __future__ import annotations

import numpy as np
import pandas as pd

from reports.report import parameter_importances


def test_importances_cope_with_parameters_an_architecture_does_not_use():
    rng = np.random.default_rng(0)
    # layer_1_size drives the metric (0.30 .. 0.94); the other architecture sits near the middle with tiny noise
    rows = [{"architecture": "c3dsmall", "backbone": np.nan, "layer_1_size": pd.NA, "val": rng.uniform(0.55, 0.57)}
            for _ in range(4)]
    rows += [{"architecture": "image_mlp_frozen", "backbone": "mobilenet_v2", "layer_1_size": size,
              "val": 0.3 + size / 100} for size in (0, 8, 16, 32, 64)]
    finished = pd.DataFrame(rows).astype({"layer_1_size": "Int64"})
    importances = parameter_importances(finished, ["architecture", "backbone", "layer_1_size"], "val", "maximize")
    assert set(importances) == {"architecture", "backbone", "layer_1_size"}
    assert abs(sum(importances.values()) - 1) < 1e-6
    assert max(importances, key=importances.get) == "layer_1_size"  # the parameter that drives the metric
    assert importances["layer_1_size"] > 0.5, importances


def test_a_trial_read_back_from_the_store_must_make_its_key_and_name_only_the_sweep_files():
    import pytest

    from reports.export import stored_spec
    from runner.spec import TrialSpec
    from zoo.errors import UserError

    params = {"architecture": "image_mlp_frozen", "backbone": "mobilenet_v2", "frame_size": "32x32",
              "weights": "/tmp/planted.weights.h5"}
    key = TrialSpec.from_flat(params).key("data")
    named = frozenset({("weights", "/tmp/planted.weights.h5")})
    assert stored_spec({**params, "data_root": "/x"}, key, "data", named).model.weights == "/tmp/planted.weights.h5"
    with pytest.raises(UserError, match="not the parameters of trial"):
        stored_spec({**params, "weights": "/etc/other.h5"}, key, "data", named)
    with pytest.raises(UserError, match="not the parameters of trial"):
        stored_spec(params, key, None, named)  # no data fingerprint recorded: nothing ties them to the key
    with pytest.raises(UserError, match="would load weights /tmp/planted.weights.h5, a file your sweep file does "
                                        "not name"):
        stored_spec(params, key, "data", frozenset())


def test_a_registered_model_is_copied_only_from_inside_the_store_artefact_root(tmp_path):
    import pytest

    from reports.predict import _check_location, local_artifact_root
    from zoo.errors import UserError

    root = local_artifact_root(f"sqlite:///{tmp_path / 'w' / 'mlflow.db'}", None)
    assert root == (tmp_path / "w" / "mlartifacts").resolve()
    assert local_artifact_root(f"sqlite:///{tmp_path / 'm.db'}", tmp_path / "w") == root
    assert local_artifact_root("http://mlflow:5000", None) is None
    (tmp_path / "w" / "mlartifacts" / "1").mkdir(parents=True)
    (tmp_path / "w" / "mlartifacts" / "escape").symlink_to(tmp_path)
    _check_location("models:/t@champion", (root / "1" / "models" / "m-1").as_uri(), root)
    _check_location("models:/t@champion", "mlflow-artifacts:/1/models/m-1/artifacts", None)  # the server's own
    for planted in (tmp_path.as_uri(), str(tmp_path / "secrets"), f"{root.as_uri()}/../../secrets",
                    (root / "escape" / "secrets").as_uri()):
        with pytest.raises(UserError, match="outside the store's artefact root"):
            _check_location("models:/t@champion", planted, root)
    with pytest.raises(UserError, match="outside the store"):
        _check_location("models:/t@champion", "file:///home/someone", None)
