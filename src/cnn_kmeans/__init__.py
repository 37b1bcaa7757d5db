"""cnn-kmeans: unsupervised time-series clustering with a dilated causal CNN encoder and KMeans."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cnn-kmeans")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
