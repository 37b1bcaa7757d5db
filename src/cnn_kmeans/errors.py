"""Error types shared by every layer."""


class UserError(ValueError):
    """A problem the caller can fix; the message says what was wrong and how to fix it."""


class ArtifactError(UserError):
    """A model artifact that is missing, corrupt or of an unknown format version."""


class TrainingInterrupted(Exception):
    """Raised between two steps when training is asked to stop; the trainer's state can be saved.

    Here rather than in `trainer` so that the training entrypoint can tell it apart before it
    has imported torch (see `cnn_kmeans.container.stopping`).
    """
