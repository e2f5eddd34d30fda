"""The start of a recording's final summary call (its notes so far) read into the
summariser while the recording is being made: after stop only the rest of the call is read.
``tokens``: the prompt's tokens read (JSON), ``state``: the model's cache for them.  A cache
(about 28 KB a token, up to ~115 MB): removed once the summary is written, and with the
recording."""

from __future__ import annotations

import sqlite_utils


def migrate(db: sqlite_utils.Database) -> None:
    db["summary_ahead"].create({"recording_id": int, "model_id": str, "tokens": str,
                                "state": bytes}, pk="recording_id", not_null={"state"})
