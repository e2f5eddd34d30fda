"""Retention: the admin's rules erase recordings' audio, or whole recordings, after a number
of days; a recording under legal hold is never erased.

A rule on **audio** counts from when a reviewer confirmed the transcript (never confirmed:
never erased): the audio files and the recording's data key go, so every copy of the sealed
audio (backups, the other update slot) is unreadable; the transcript, summary and history
stay.  A rule on **recordings** counts from when the recording was made and deletes it as
a deletion from the page does (key destroyed, rows removed, the deletion listed).  A rule
covers one dialect profile or every recording; where several apply, the shortest wins.

The worker purges once a day (and at its start when a day has passed); an admin purges on
the System page or with ``python -m device retention purge``.  Each erasure is an audit entry;
the System page lists what the rules erase in the next seven days.  Times are passed in, so
tests run the calendar forward without waiting.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from device.errors import InvalidInput
from device.records import Recording
from device.settings import Settings
from device.store import Store

log = logging.getLogger(__name__)
EVERY = timedelta(days=1)
PREVIEW = timedelta(days=7)


@dataclass(frozen=True)
class Due:
    recording: Recording
    what: str
    """"audio" or "recording"."""
    at: datetime
    """When the rule reaches it."""
    rule_id: int
    days: int


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def due(store: Store, until: datetime) -> list[Due]:
    """What the rules erase by ``until``: one entry per recording, a deletion before an
    erasure of audio, the earliest rule of each kind; never a held recording."""
    found: dict[int, Due] = {}
    for rule in store.retention_rules():
        counted_before = _stamp(until - timedelta(days=rule.days))
        for recording in store.retention_candidates(rule.what, rule.profile, counted_before):
            start = recording.reviewed_at if rule.what == "audio" else recording.created
            entry = Due(recording, rule.what, datetime.fromisoformat(start)
                        + timedelta(days=rule.days), rule.id, rule.days)
            before = found.get(recording.id)
            if before is None or _rank(entry) < _rank(before):
                found[recording.id] = entry
    return sorted(found.values(), key=lambda d: (d.at, d.recording.id))


def _rank(entry: Due) -> tuple[int, datetime]:
    return (entry.what != "recording", entry.at)  # deleting it makes erasing audio moot


def purge(store: Store, settings: Settings, at: datetime, trigger: str,
          auditor=None) -> list[Due]:
    """Erase what the rules say is due at ``at``; returns what was erased.  A recording a
    job works on is left for the next purge."""
    from device.audit import Auditor
    from device.pipeline import delete_recording

    auditor = auditor or Auditor(settings)
    done = []
    for entry in due(store, at):
        recording = entry.recording
        details = {"rule": entry.rule_id, "days": entry.days, "title": recording.title,
                   "trigger": trigger}
        try:
            if entry.what == "recording":
                delete_recording(store, settings, recording.id)
                action = "retention_deleted_recording"
            else:
                _erase_audio(store, settings, recording, at)
                action = "retention_erased_audio"
        except InvalidInput as exc:  # being worked on: next time
            log.info("retention: recording %s left for now: %s", recording.id, exc)
            continue
        auditor.record(store, action, object=f"recording:{recording.id}", details=details)
        log.info("retention: %s recording %s (%s, rule %s)", action, recording.id,
                 recording.title, entry.rule_id)
        done.append(entry)
    store.record_retention_run(_stamp(at), sum(d.what == "audio" for d in done),
                               sum(d.what == "recording" for d in done), trigger)
    return done


def purge_if_due(store: Store, settings: Settings, at: datetime, auditor=None
                 ) -> list[Due] | None:
    """The worker's daily purge: runs when a day has passed since the last one (or none
    ever ran); None when it was not time."""
    last = store.last_retention_run()
    if last is not None and at - datetime.fromisoformat(last.at) < EVERY:
        return None
    return purge(store, settings, at, "daily", auditor)


def _erase_audio(store: Store, settings: Settings, recording: Recording, at: datetime) -> None:
    from device.pipeline import erase_audio_files

    if store.db.execute("SELECT 1 FROM jobs WHERE recording_id = ? AND status = 'running'",
                        [recording.id]).fetchone():
        raise InvalidInput("a job is working on it")
    erase_audio_files(settings, recording)  # a power cut here: the next purge again
    store.update_recording(recording.id, audio_file=None, audio_erased=_stamp(at))
