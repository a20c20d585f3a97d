"""Dimension reduction: PCA to ``dimension_reduction_threshold`` components when wider."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA


@dataclass
class Projection:
    """A fitted linear projection ``(x - mean) @ components.T``."""

    mean: np.ndarray  # (d,)
    components: np.ndarray  # (n_components, d)
    explained_variance_ratio: float

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Project rows of ``x`` (float32 in, float32 out)."""
        return ((x - self.mean) @ self.components.T).astype(np.float32, copy=False)


def fit_projection(x: np.ndarray, threshold: int, seed: int = 0) -> Projection | None:
    """Fit PCA with ``threshold`` components when ``x`` has more columns, else ``None``.

    Parameters
    ----------
    x
        (n, d) prepared matrix.
    threshold
        Number of components to keep when ``d > threshold``.
    seed
        Seed for the randomized solver on large inputs.
    """
    n, d = x.shape
    if d <= threshold:
        return None
    n_components = min(threshold, n)
    pca = PCA(n_components=n_components, random_state=seed).fit(x)
    return Projection(
        mean=pca.mean_.astype(np.float32),
        components=pca.components_.astype(np.float32),
        explained_variance_ratio=float(pca.explained_variance_ratio_.sum()),
    )
