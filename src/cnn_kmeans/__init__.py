"""cnn-kmeans: unsupervised time-series clustering with a dilated causal CNN encoder and KMeans."""

from typing import Any

__all__ = ["__version__"]


def __getattr__(name: str) -> Any:
    # `__version__` is looked up on first use: importlib.metadata takes ~0.1 s to import, and the
    # training entrypoint, which imports this package first, must install its SIGTERM handler
    # as early as it can (see cnn_kmeans.container.stopping).
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        value = version("cnn-kmeans")
    except PackageNotFoundError:  # running from a source tree that is not installed
        value = "0.0.0"
    globals()["__version__"] = value
    return value
