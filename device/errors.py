"""Typed errors at the pipeline's boundaries; each message says what happened and what to do.

The CLI prints them as one line and exits non-zero; the web app maps them to status codes.
"""

from __future__ import annotations

import errno
from pathlib import Path

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


def is_disk_full(exc: BaseException) -> bool:
    """Whether an error means the disk (or the user's quota, or a file size limit) has no
    room left: every write path asks this one question."""
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


def N_(message: str) -> str:
    """Marks a message for the web's catalogues (``web/i18n.py``): it is translated where it
    is shown, with the parameters the error keeps."""
    return message


class TingjiError(Exception):
    """Base class: an expected failure with a message meant for the user.

    Raised as ``InvalidInput(N_("%(name)s is taken"), name=name)``, it keeps the message id
    and its parameters, so a page can say it in the reader's language; ``str()`` is English.
    """

    def __init__(self, message: str = "", /, **params):
        self.template, self.params = (message, params) if message else (None, {})
        super().__init__(message % params if params else message)


class AudioError(TingjiError):
    """Audio that cannot be used; the message names the file and the reason."""

    def __init__(self, path: Path | str, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")
        self.template = None  # the decoder's own words: shown as they are


class AudioDecodeError(AudioError):
    pass


class AudioTooLargeError(AudioError):
    pass


class DiskFullError(TingjiError):
    pass


class NotFound(TingjiError):
    """A recording, segment, job, revision, summary, user or glossary entry that does not
    exist (or that this user may not see); the web answers 404."""


class RecordingNotFound(NotFound):
    pass


class JobNotFound(NotFound):
    pass


class RevisionNotFound(NotFound):
    pass


class UserNotFound(NotFound):
    pass


class InvalidInput(TingjiError):
    """A change refused as it stands (an empty segment, a taken user name, a short
    password); the message says what to change, and the web answers 400."""


class JobCancelled(TingjiError):
    pass


class SegmentNotFound(NotFound):
    pass


class EditConflict(TingjiError):
    """A write based on a revision that is no longer current; ``current`` holds what is
    stored now (segment records) so the caller can show the newer text."""

    def __init__(self, message: str, current: list | None = None, **params):
        super().__init__(message, **params)
        self.current = current or []
