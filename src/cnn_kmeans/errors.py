"""Error types shared by every layer."""


class UserError(ValueError):
    """A problem the caller can fix; the message says what was wrong and how to fix it."""


class ArtifactError(UserError):
    """A model artifact that is missing, corrupt or of an unknown format version."""
