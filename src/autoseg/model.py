"""The fitted segmentation model: saved in safe formats and reused to assign new rows.

A model directory ``<model_dir>/<model_name>/`` holds ``model.json`` (feature spec, chosen k,
data fingerprint, versions) and ``arrays.npz`` (centroids and the PCA projection), loaded with
``allow_pickle=False`` so loading a model never executes code. A save is atomic: the new model
is written beside the old one (every file fsynced, mode 0644, the folder 0755) and swapped in
by two renames. A ``kill -9`` between those renames leaves the previous model as
``.<model_name>.old`` and no ``<model_name>``; :meth:`SegmentationModel.load` reads it from
there and the next commit puts it back first, so a saved model is never half old, half new.
A ``kill -9`` while a run stages leaves a hidden ``.<model_name>.<random>`` folder; the next
save of that model removes such folders once they are an hour old.

A model that does not exist (:class:`ModelNotFound`) and one that exists but cannot be read
(:class:`ModelUnreadable`: corrupt, truncated, unreadable or of another format version) are
different errors: only the first means "fit afresh".
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autoseg import __version__
from autoseg.atomic import DIRECTORY_MODE, fsync_directory, make_directory, write_new_file
from autoseg.errors import OutputError, UsageError
from autoseg.features import FeatureSpec
from autoseg.reduce import Projection

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MODEL_FILES = ("model.json", "arrays.npz")
# A staging folder this old was left by a run that was killed (kill -9, a node lost) while it
# staged: a live run stages its model in seconds, just before it commits.
STALE_STAGING_SECONDS = 3600
# What tempfile.mkdtemp appends to the ".<model_name>." prefix (never ".old", which holds the
# previous model during a commit and may be the only copy of it).
_STAGING_SUFFIX = re.compile(r"^[a-z0-9_]{8}$")


class ModelNotFound(UsageError):
    """No model was ever saved under this name (a refit starts the cluster ids afresh)."""


class ModelUnreadable(UsageError):
    """A saved model exists but cannot be read: corrupt, unreadable or another format."""


def _old_directory(directory: Path) -> Path:
    """Where a commit keeps the previous model between its two renames."""
    return directory.with_name(f".{directory.name}.old")


def _unreadable(model_name: str, path: Path, reason: str) -> ModelUnreadable:
    folder = path if path.is_dir() else path.parent
    return ModelUnreadable(
        f"--model-name={model_name!r}: the saved model {str(path)!r} cannot be read ({reason}):"
        f" restore it, or move the folder {str(folder)!r} away (or delete it) to start the "
        "cluster ids afresh, or use another --model-name"
    )


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
        return prepare_matrix(frame, self.spec, self.projection)

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
        make_directory(directory.parent)
        remove_stale_staging(directory)
        try:
            staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        except OSError as exc:
            raise OutputError(directory, exc, "write") from None

        def write(name: str, data: bytes | str) -> None:
            try:
                write_new_file(staging / name, data)
            except OutputError as exc:  # name the model's file, not the hidden staging folder
                raise OutputError(directory / name, exc.errno or 0) from None

        try:
            arrays: dict[str, np.ndarray] = {"centroids": self.centroids}
            if self.projection is not None:
                arrays["pca_mean"] = self.projection.mean
                arrays["pca_components"] = self.projection.components
            buffer = io.BytesIO()
            np.savez(buffer, **arrays)
            write("arrays.npz", buffer.getvalue())
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
            write("model.json", json.dumps(meta, indent=2))
            if surrogate_json is not None:
                write("surrogate.json", bytes(surrogate_json))
            try:
                # mkdtemp makes the folder private (0700); a model folder is shared like 0755.
                os.chmod(staging, DIRECTORY_MODE)
            except OSError as exc:
                raise OutputError(staging, exc, "write") from None
            fsync_directory(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return StagedModel(directory, staging)

    @classmethod
    def load(cls, directory: Path, model_name: str) -> SegmentationModel:
        """Load a model saved with :meth:`save`.

        Raises
        ------
        ModelNotFound
            When no model of that name was saved (no folder, or an empty one).
        ModelUnreadable
            When the model exists but cannot be read: a file is missing, truncated, corrupt
            or unreadable, or it was saved in another format version.
        """
        directory = Path(directory)
        if not directory.exists() and _old_directory(directory).is_dir():
            # A commit was killed between its two renames: the previous model is intact there.
            directory = _old_directory(directory)
        try:
            present = directory.is_dir() and any(directory.iterdir())
        except OSError as exc:
            raise _unreadable(model_name, directory, exc.strerror or type(exc).__name__) from None
        if not present:
            if directory.exists() and not directory.is_dir():
                raise _unreadable(model_name, directory, "it is a file, not a model folder")
            raise ModelNotFound(
                f"--model-name={model_name!r}: no saved model in {str(directory)!r}; run once "
                "with --force-refit to fit and save it, or check --model-dir"
            )
        meta_path = directory / "model.json"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if not isinstance(meta, dict):
                raise ValueError("model.json is not an object")
        except FileNotFoundError:
            raise _unreadable(model_name, meta_path, "the file is missing") from None
        except OSError as exc:
            raise _unreadable(model_name, meta_path, exc.strerror or type(exc).__name__) from None
        except ValueError:
            raise _unreadable(model_name, meta_path, "not valid JSON: truncated or corrupt") \
                from None
        if meta.get("format_version") != FORMAT_VERSION:
            raise _unreadable(
                model_name, meta_path,
                f"saved in format {meta.get('format_version')!r}, this version reads "
                f"{FORMAT_VERSION}",
            )
        arrays_path = directory / "arrays.npz"
        try:
            with np.load(arrays_path, allow_pickle=False) as arrays:
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
        except FileNotFoundError:
            raise _unreadable(model_name, arrays_path, "the file is missing") from None
        except OSError as exc:
            raise _unreadable(model_name, arrays_path, exc.strerror or "not a NumPy archive: "
                              "truncated or corrupt") from None
        except (ValueError, KeyError, EOFError, zipfile.BadZipFile):
            raise _unreadable(model_name, arrays_path, "truncated or corrupt") from None
        try:
            spec = FeatureSpec.from_dict(meta["feature_spec"])
            k = int(meta["k"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise _unreadable(model_name, meta_path,
                              f"incomplete model description: {type(exc).__name__}") from None
        if centroids.ndim != 2 or centroids.shape[0] != k:
            raise _unreadable(model_name, arrays_path,
                              f"holds {centroids.shape[0] if centroids.ndim else 0} centroids "
                              f"for k={k}")
        return cls(
            spec=spec, centroids=centroids, projection=projection, k=k,
            fingerprint=meta.get("fingerprint", {}), extra=meta.get("extra", {}),
        )

    @classmethod
    def load_if_saved(cls, directory: Path, model_name: str) -> SegmentationModel | None:
        """The saved model, or ``None`` when none was ever saved under this name.

        For the cluster-id matching of a refit: a missing model means "first fit", an
        unreadable one stops the run (it must not silently renumber the clusters).

        Raises
        ------
        ModelUnreadable
            When a model exists but cannot be read.
        """
        try:
            return cls.load(directory, model_name)
        except ModelNotFound:
            return None


@dataclass
class StagedModel:
    """A model written beside its directory, not yet in place (:meth:`SegmentationModel.stage`)."""

    directory: Path
    staging: Path

    def commit(self) -> Path:
        """Swap the staged files in (renames only) and return the model directory.

        Raises
        ------
        OutputError
            A rename failed; the previous model is back in place.
        """
        old = _old_directory(self.directory)
        parent = self.directory.parent
        try:
            if old.exists():
                if self.directory.exists():
                    shutil.rmtree(old)  # left by an earlier commit's cleanup
                else:
                    # An earlier commit was killed between its renames: put that model back
                    # first, so that no step below can lose the only copy.
                    os.replace(old, self.directory)
            if self.directory.exists():
                os.replace(self.directory, old)
            os.replace(self.staging, self.directory)
        except OSError as exc:
            if old.exists() and not self.directory.exists():
                os.replace(old, self.directory)  # put the previous model back
            self.discard()
            raise OutputError(self.directory, exc, "rename") from None
        except BaseException:
            if old.exists() and not self.directory.exists():
                os.replace(old, self.directory)
            self.discard()
            raise
        fsync_directory(parent)
        if old.exists():
            shutil.rmtree(old, ignore_errors=True)
        return self.directory

    def discard(self) -> None:
        """Forget the staged files (the run failed): the previous model stays as it was."""
        shutil.rmtree(self.staging, ignore_errors=True)


def remove_stale_staging(directory: Path, now: float | None = None) -> list[Path]:
    """Remove the staging folders of ``directory``'s model that killed runs left behind.

    Only hidden ``.<model_name>.<8 characters>`` folders beside ``directory`` that are older
    than ``STALE_STAGING_SECONDS`` go; the previous model kept during a commit
    (``.<model_name>.old``) and a live run's staging folder are never touched. Best effort: a
    folder that cannot be removed stays.

    Returns
    -------
    list of pathlib.Path
        The folders removed.
    """
    prefix = f".{directory.name}."
    limit = (time.time() if now is None else now) - STALE_STAGING_SECONDS
    removed: list[Path] = []
    try:
        candidates = list(directory.parent.iterdir())
    except OSError:
        return removed
    for path in candidates:
        name = path.name
        if not (name.startswith(prefix) and _STAGING_SUFFIX.match(name[len(prefix):])):
            continue
        try:
            if not path.is_dir() or path.is_symlink() or path.stat().st_mtime > limit:
                continue
            shutil.rmtree(path)
        except OSError:
            continue
        removed.append(path)
    if removed:
        log.info("removed %d staging folder(s) of model %r left by killed runs",
                 len(removed), directory.name)
    return removed


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


def prepare_matrix(frame: Any, spec: FeatureSpec, projection: Projection | None,
                   xp: Any = np) -> tuple[Any, dict[str, int]]:
    """The float32 matrix k-means sees for ``frame`` (prepared, projected when PCA was fitted)
    and the values imputed per column: the one preparation both engines use. ``frame`` is a
    pandas frame with ``xp`` NumPy, or a cuDF frame with ``xp`` CuPy (the matrix is then
    built on the GPU)."""
    matrix, imputed = spec.transform(frame, xp)
    if projection is not None:
        matrix = projection.transform(matrix, xp=xp)
    return matrix, imputed
