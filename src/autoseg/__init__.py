"""autoseg: segment any table with k-means, choose k by silhouette, explain every cluster."""

__version__ = "0.1.0"
