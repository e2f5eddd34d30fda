"""Notes on parts of a recording's transcript (the summariser's map step), kept under a key
naming everything the notes depend on: taken while the recording is being made, so that
after stop only the last part and the summary are left, and taken again only for a part
whose text changed.  ``spans``: the chunk's segments, [start, end] each; ``ahead``: taken
during the recording (the summary cuts the transcript as these chunks were);
``notes_until``: how far into the recording they have got."""

from __future__ import annotations

import sqlite_utils


def migrate(db: sqlite_utils.Database) -> None:
    db["summary_notes"].create({"recording_id": int, "key": str, "spans": str, "ahead": int,
                                "model_id": str, "value": str},
                               pk=("recording_id", "key"), not_null={"value"})
    db["recordings"].add_column("notes_until", float)
