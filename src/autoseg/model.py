"""The fitted segmentation model: saved in safe formats and reused to assign new rows.

A model directory ``<model_dir>/<model_name>/`` holds ``model.json`` (feature spec, chosen k,
data fingerprint, versions) and ``arrays.npz`` (centroids and the PCA projection), loaded with
``allow_pickle=False`` so loading a model never executes code. A save is atomic: the new model
is written beside the old one and swapped in by renames.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autoseg import __version__
from autoseg.errors import UsageError
from autoseg.features import FeatureSpec
from autoseg.reduce import Projection

FORMAT_VERSION = 1


@dataclass
class SegmentationModel:
    """Everything needed to assign a row to a cluster."""

    spec: FeatureSpec
    centroids: np.ndarray  # (k, d) in the (possibly projected) prepared space
    projection: Projection | None
    k: int
    fingerprint: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    def prepare(self, frame: pd.DataFrame) -> tuple[np.ndarray, dict[str, int]]:
        """Prepared (and projected) matrix for ``frame``, and imputation counts."""
        matrix, imputed = self.spec.transform(frame)
        if self.projection is not None:
            matrix = self.projection.transform(matrix)
        return matrix, imputed

    def save(self, directory: Path, surrogate_json: bytes | bytearray | None = None) -> Path:
        """Write the model atomically to ``directory`` (replacing an existing one).

        ``surrogate_json`` is the explanation model in XGBoost's JSON format, saved as
        ``surrogate.json`` beside the clustering state.
        """
        return self.stage(directory, surrogate_json).commit()

    def stage(self, directory: Path,
              surrogate_json: bytes | bytearray | None = None) -> StagedModel:
        """Write the model's files beside ``directory``; :meth:`StagedModel.commit` swaps them in.

        A run stages its model before it writes its tables, so the step that can fail for
        ordinary reasons (a full disk, permissions) fails while nothing has been written yet;
        after the tables, only two renames are left.
        """
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        try:
            arrays: dict[str, np.ndarray] = {"centroids": self.centroids}
            if self.projection is not None:
                arrays["pca_mean"] = self.projection.mean
                arrays["pca_components"] = self.projection.components
            np.savez(staging / "arrays.npz", **arrays)
            meta = {
                "format_version": FORMAT_VERSION,
                "autoseg_version": __version__,
                "k": self.k,
                "feature_spec": self.spec.to_dict(),
                "projection_explained_variance": (
                    self.projection.explained_variance_ratio if self.projection else None
                ),
                "fingerprint": self.fingerprint,
                "extra": self.extra,
            }
            (staging / "model.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
            if surrogate_json is not None:
                (staging / "surrogate.json").write_bytes(bytes(surrogate_json))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return StagedModel(directory, staging)

    @classmethod
    def load(cls, directory: Path, model_name: str) -> SegmentationModel:
        """Load a model saved with :meth:`save`.

        Raises
        ------
        UsageError
            When no model of that name exists or it cannot be read.
        """
        directory = Path(directory)
        meta_path = directory / "model.json"
        if not meta_path.exists():
            raise UsageError(
                f"--model-name={model_name!r}: no saved model in {str(directory)!r}; run once "
                "with --force-refit to fit and save it, or check --model-dir"
            )
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            with np.load(directory / "arrays.npz", allow_pickle=False) as arrays:
                centroids = arrays["centroids"]
                projection = None
                if "pca_components" in arrays:
                    projection = Projection(
                        mean=arrays["pca_mean"],
                        components=arrays["pca_components"],
                        explained_variance_ratio=float(
                            meta.get("projection_explained_variance") or 0.0
                        ),
                    )
            spec = FeatureSpec.from_dict(meta["feature_spec"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(
                f"--model-name={model_name!r}: the saved model in {str(directory)!r} is "
                f"unreadable ({type(exc).__name__}); refit with --force-refit"
            ) from None
        if meta.get("format_version") != FORMAT_VERSION:
            raise UsageError(
                f"--model-name={model_name!r} was saved in format "
                f"{meta.get('format_version')}, this version reads {FORMAT_VERSION}: refit it"
            )
        return cls(
            spec=spec, centroids=centroids, projection=projection, k=int(meta["k"]),
            fingerprint=meta.get("fingerprint", {}), extra=meta.get("extra", {}),
        )


@dataclass
class StagedModel:
    """A model written beside its directory, not yet in place (:meth:`SegmentationModel.stage`)."""

    directory: Path
    staging: Path

    def commit(self) -> Path:
        """Swap the staged files in (renames only) and return the model directory."""
        old = self.directory.with_name(f".{self.directory.name}.old")
        try:
            if old.exists():
                shutil.rmtree(old)
            if self.directory.exists():
                os.replace(self.directory, old)
            os.replace(self.staging, self.directory)
        except BaseException:
            if old.exists() and not self.directory.exists():
                os.replace(old, self.directory)  # put the previous model back
            self.discard()
            raise
        if old.exists():
            shutil.rmtree(old)
        return self.directory

    def discard(self) -> None:
        """Forget the staged files (the run failed): the previous model stays as it was."""
        shutil.rmtree(self.staging, ignore_errors=True)


def data_fingerprint(frame: pd.DataFrame, max_rows: int = 10_000) -> dict[str, Any]:
    """A fingerprint of a table: schema, row count and a hash of its first rows."""
    head = frame.head(max_rows)
    try:
        row_hashes = pd.util.hash_pandas_object(head, index=False).to_numpy()
        content = hashlib.sha256(row_hashes.tobytes()).hexdigest()[:16]
    except TypeError:
        content = None
    return {
        "rows": int(len(frame)),
        "columns": {str(c): str(t) for c, t in frame.dtypes.items()},
        "head_sha256": content,
    }

