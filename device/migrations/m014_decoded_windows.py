"""Windows of a recording decoded while it was being recorded (the final pass runs during
the recording): the transcription after stop takes them instead of decoding them again.
Removed with the recording's transcript.  ``final_pass_until``: how far into the recording
the final pass has got (its page says so)."""

from __future__ import annotations

import sqlite_utils


def migrate(db: sqlite_utils.Database) -> None:
    db["decoded_windows"].create({"recording_id": int, "key": str, "value": str},
                                 pk=("recording_id", "key"), not_null={"value"})
    db["recordings"].add_column("final_pass_until", float)
