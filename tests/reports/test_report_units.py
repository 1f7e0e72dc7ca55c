"""Pure report pieces on hand-made tables: mixed architectures leave parameters missing (NaN) for some rows."""

from __future__ import annotations

import numpy as np
import pandas as pd

from reports.report import parameter_importances


def test_importances_cope_with_parameters_an_architecture_does_not_use():
    rng = np.random.default_rng(0)
    rows = [{"architecture": "c3dsmall", "backbone": np.nan, "layer_1_size": pd.NA, "val": rng.uniform(0.4, 0.6)}
            for _ in range(4)]
    rows += [{"architecture": "image_mlp_frozen", "backbone": "mobilenet_v2", "layer_1_size": size,
              "val": 0.5 + size / 1000} for size in (0, 8, 16, 32, 64)]
    finished = pd.DataFrame(rows).astype({"layer_1_size": "Int64"})
    importances = parameter_importances(finished, ["architecture", "backbone", "layer_1_size"], "val", "maximize")
    assert set(importances) == {"architecture", "backbone", "layer_1_size"}
    assert abs(sum(importances.values()) - 1) < 1e-6
