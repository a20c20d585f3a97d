"""Dimension reduction: PCA to ``dimension_reduction_threshold`` components when wider."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from autoseg.backend import Backend, select_backend


@dataclass
class Projection:
    """A fitted linear projection ``(x - mean) @ components.T``."""

    mean: np.ndarray  # (d,)
    components: np.ndarray  # (n_components, d)
    explained_variance_ratio: float

    def transform(self, x: Any, chunk_rows: int = 262_144, xp: Any = np) -> Any:
        """Project rows of ``x`` (float32 in, float32 out), in chunks to bound memory; ``x``
        and the result are arrays of ``xp`` (NumPy, or CuPy for a matrix on the GPU)."""
        mean = xp.asarray(self.mean)
        components_t = xp.asarray(self.components).T
        out = xp.empty((x.shape[0], self.components.shape[0]), dtype=xp.float32)
        for start in range(0, x.shape[0], chunk_rows):
            block = x[start : start + chunk_rows]
            out[start : start + chunk_rows] = (block - mean) @ components_t
        return out


def fit_projection(x: np.ndarray, threshold: int, seed: int = 0,
                   backend: Backend | None = None) -> Projection | None:
    """Fit PCA with ``threshold`` components when ``x`` has more columns, else ``None``.

    Parameters
    ----------
    x
        (n, d) prepared matrix of the PCA fit rows (``autoseg.sampling.plan_rows``: the
        whole table, or at most ``sampling.PCA_FIT_ROWS`` rows of a large one).
    threshold
        Number of components to keep when ``d > threshold``.
    seed
        Seed for the randomized solver on large inputs.
    backend
        Device backend (default: the CPU); cuML PCA on a GPU (components agree with
        scikit-learn's up to sign).

    Returns
    -------
    Projection or None
        The fitted projection, or ``None`` when ``x`` is not wider than ``threshold``.
    """
    n, d = x.shape
    if d <= threshold:
        return None
    backend = backend or select_backend("cpu")
    pca = backend.pca(min(threshold, n), seed=seed).fit(backend.to_device(x, np.float32))
    return Projection(
        mean=pca.mean_.astype(np.float32),
        components=pca.components_.astype(np.float32),
        explained_variance_ratio=float(pca.explained_variance_ratio_.sum()),
    )
