"""The error every media reader raises for a file that cannot become model input."""


class MediaError(ValueError):
    """An item whose media cannot be read; the message starts with the path."""
