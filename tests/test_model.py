"""Saving a model: staged beside its folder, committed by renames, or discarded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from autoseg.features import fit_features
from autoseg.model import SegmentationModel


def _model(k: int) -> SegmentationModel:
    frame = pd.DataFrame({"a": np.arange(50.0), "b": np.arange(50.0) % 7})
    spec = fit_features(frame, ())
    centroids = np.zeros((k, len(spec.matrix_columns)), dtype=np.float32)
    return SegmentationModel(spec=spec, centroids=centroids, projection=None, k=k,
                             fingerprint={"rows": 50})


def test_stage_then_commit_replaces_and_discard_keeps(tmp_path: Path) -> None:
    directory = tmp_path / "models" / "m"
    _model(3).save(directory)
    discarded = _model(4).stage(directory)
    assert SegmentationModel.load(directory, "m").k == 3  # staged, not yet in place
    discarded.discard()
    assert SegmentationModel.load(directory, "m").k == 3
    _model(5).stage(directory, b'{"learner": {}}').commit()
    assert SegmentationModel.load(directory, "m").k == 5
    assert (directory / "surrogate.json").read_bytes() == b'{"learner": {}}'
    assert sorted(p.name for p in directory.parent.iterdir()) == ["m"]
