"""Saving a model: staged beside its folder, committed by renames, or discarded; loading one
that is missing or unreadable."""

from __future__ import annotations

import json
import os
import re
import stat
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from autoseg.errors import OutputError
from autoseg.features import fit_features
from autoseg.model import (
    STALE_STAGING_SECONDS,
    ModelNotFound,
    ModelUnreadable,
    SegmentationModel,
    remove_stale_staging,
)


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


def test_missing_model_is_model_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match=r"^--model-name='m': no saved model in"):
        SegmentationModel.load(tmp_path / "m", "m")
    (tmp_path / "m").mkdir()  # an empty folder is no model either
    assert SegmentationModel.load_if_saved(tmp_path / "m", "m") is None


def _corrupt_json(directory: Path) -> None:
    (directory / "model.json").write_text('{"format_version": 1, "k"')


def _old_format(directory: Path) -> None:
    meta = json.loads((directory / "model.json").read_text())
    meta["format_version"] = 0
    (directory / "model.json").write_text(json.dumps(meta))


def _truncated_arrays(directory: Path) -> None:
    data = (directory / "arrays.npz").read_bytes()
    (directory / "arrays.npz").write_bytes(data[: len(data) // 2])


def _no_arrays(directory: Path) -> None:
    (directory / "arrays.npz").unlink()


def _no_meta(directory: Path) -> None:
    (directory / "model.json").unlink()


def _wrong_k(directory: Path) -> None:
    meta = json.loads((directory / "model.json").read_text())
    meta["k"] = 7
    (directory / "model.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(("damage", "file", "reason"), [
    (_corrupt_json, "model.json", r"not valid JSON: truncated or corrupt"),
    (_old_format, "model.json", r"saved in format 0, this version reads 1"),
    (_truncated_arrays, "arrays.npz", r"truncated or corrupt"),
    (_no_arrays, "arrays.npz", r"the file is missing"),
    (_no_meta, "model.json", r"the file is missing"),
    (_wrong_k, "arrays.npz", r"holds 3 centroids for k=7"),
])
def test_unreadable_model_names_the_file_and_the_fix(
    tmp_path: Path, damage: Callable[[Path], None], file: str, reason: str
) -> None:
    directory = tmp_path / "m"
    _model(3).save(directory)
    damage(directory)
    pattern = (rf"^--model-name='m': the saved model '{re.escape(str(directory / file))}' "
               rf"cannot be read \({reason}\): restore it, or move the folder "
               rf"'{re.escape(str(directory))}' away \(or delete it\) to start the cluster ids "
               r"afresh, or use another --model-name$")
    with pytest.raises(ModelUnreadable, match=pattern):
        SegmentationModel.load(directory, "m")
    with pytest.raises(ModelUnreadable):
        SegmentationModel.load_if_saved(directory, "m")  # never "no model": no silent refit


def test_saved_files_are_complete_and_0644_in_a_0755_folder(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        directory = _model(3).save(tmp_path / "m", b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o755
    for name in ("model.json", "arrays.npz", "surrogate.json"):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o644, name


def test_kill_between_the_two_renames_keeps_the_previous_model(tmp_path: Path) -> None:
    directory = tmp_path / "m"
    _model(3).save(directory)
    staged = _model(5).stage(directory)
    # The state a kill -9 leaves after the first rename of a commit: no folder, only `.m.old`.
    os.replace(directory, tmp_path / ".m.old")
    assert SegmentationModel.load(directory, "m").k == 3
    staged.discard()
    _model(4).stage(directory).commit()  # puts the previous model back first, then swaps
    assert SegmentationModel.load(directory, "m").k == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_staging_left_by_a_killed_run_is_removed_by_the_next_save(tmp_path: Path) -> None:
    directory = tmp_path / "m"
    _model(3).save(directory)
    # What kill -9 during staging leaves: a hidden staging folder, here two hours old.
    killed = _model(4).stage(directory).staging
    two_hours_ago = time.time() - 2 * STALE_STAGING_SECONDS
    os.utime(killed, (two_hours_ago, two_hours_ago))
    live = _model(5).stage(directory)  # a run staging right now: young, kept
    # Not staging folders of this model: another model's (".x.abcd.old" has an 8-character
    # tail after ".x." but is no mkdtemp name).
    for name in (".x.abcd.old", ".mm.abcdefgh"):
        (tmp_path / name).mkdir()
        os.utime(tmp_path / name, (two_hours_ago, two_hours_ago))
    _model(6).save(directory)
    names = {p.name for p in tmp_path.iterdir()}
    assert killed.name not in names
    assert live.staging.exists()
    assert {".x.abcd.old", ".mm.abcdefgh"} <= names
    assert SegmentationModel.load(directory, "m").k == 6
    # The previous model a killed commit left is never staging to remove, however old.
    (tmp_path / ".m.old").mkdir()
    os.utime(tmp_path / ".m.old", (two_hours_ago, two_hours_ago))
    assert remove_stale_staging(directory) == []
    assert (tmp_path / ".m.old").exists()


def test_kill_during_the_cleanup_leaves_the_new_model(tmp_path: Path) -> None:
    directory = tmp_path / "m"
    _model(3).save(directory)
    (tmp_path / ".m.old").mkdir()  # a half-removed previous model from a killed cleanup
    (tmp_path / ".m.old" / "arrays.npz").write_bytes(b"half")
    assert SegmentationModel.load(directory, "m").k == 3
    _model(6).save(directory)
    assert SegmentationModel.load(directory, "m").k == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_stage_into_an_unwritable_place_is_an_output_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match=r"^cannot create '.*file'.*ENOTDIR|^cannot create"):
        _model(3).stage(tmp_path / "file" / "models" / "m")
