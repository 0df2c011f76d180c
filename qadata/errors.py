"""The error every media reader raises for a file that cannot become model input."""

from __future__ import annotations

import errno

# Reads that fail for a reason that may pass: an I/O error, a stale handle or a dropped connection on a shared
# volume, a timeout.
TRANSIENT_ERRNOS = frozenset({errno.EIO, errno.ESTALE, errno.EAGAIN, errno.ETIMEDOUT, errno.EINTR, errno.ENOTCONN,
                              errno.ECONNRESET, errno.EHOSTUNREACH})


class MediaError(ValueError):
    """An item whose media cannot be read; the message starts with the path."""


class TransientMediaError(MediaError):
    """A read that failed for a reason that may pass (TRANSIENT_ERRNOS): retried, and never remembered."""


def read_error(message: str, error: BaseException) -> MediaError:
    """The MediaError for `error` met while reading: transient when it is an OSError that may pass."""
    transient = isinstance(error, OSError) and error.errno in TRANSIENT_ERRNOS
    return (TransientMediaError if transient else MediaError)(message)
