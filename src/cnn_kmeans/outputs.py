"""What a prediction answers with after each label: one declaration for the server and the CLI.

The server's `output` choice (Accept `output=`, `CNN_KMEANS_OUTPUT`) and `cnn-kmeans predict
--columns` both come from `OUTPUT_CHOICES` and `output_values`, so a CSV answer of the endpoint
and a `predict` file agree line for line.
"""

from __future__ import annotations

import numpy as np

OUTPUT_CHOICES = ("features", "labels", "distances")  # the first is the default


def output_values(output: str, features: np.ndarray, distances: np.ndarray) -> np.ndarray | None:
    """The values written after each label for an `output` choice; None for `labels`.

    Args:
        output: one of OUTPUT_CHOICES.
        features: (N, D) features.
        distances: (N, k) distances to the centroids.
    """
    if output not in OUTPUT_CHOICES:
        raise ValueError(f"unknown output {output!r}; one of {', '.join(OUTPUT_CHOICES)}")
    return {"features": features, "distances": distances, "labels": None}[output]
