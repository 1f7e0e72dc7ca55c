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
