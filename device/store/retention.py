"""Retention rules, legal holds and purges (``device.retention`` decides and erases)."""

from __future__ import annotations

from dataclasses import dataclass

from device.errors import N_, InvalidInput, NotFound
from device.records import Recording
from device.store._base import Rooms, now, recording_of
from device.text import NOTE_MAX, clean_label

WHAT = ("audio", "recording")
"""What a rule erases: a recording's audio (its transcript stays), or the whole recording."""


@dataclass(frozen=True)
class Rule:
    id: int
    what: str
    days: int
    profile: str | None
    """The dialect profile of the recordings it covers; None: every recording."""
    created: str
    created_by: str | None


@dataclass(frozen=True)
class Run:
    id: int
    at: str
    audio_erased: int
    recordings_deleted: int
    trigger: str


class RetentionRooms(Rooms):
    def retention_rules(self) -> list[Rule]:
        return [Rule(**row) for row in self.db.query(
            "SELECT * FROM retention_rules ORDER BY what, days, id")]

    def add_retention_rule(self, what: str, days: int, profile: str | None = None,
                           created_by: str | None = None) -> Rule:
        if what not in WHAT:
            raise InvalidInput(N_("a rule erases audio or recordings, not %(what)s"),
                               what=repr(what))
        if not 0 <= days <= 100 * 366:
            raise InvalidInput(N_("a rule's days are 0 to 36,600"))
        with self.transaction():
            rule_id = self.db["retention_rules"].insert({
                "what": what, "days": days, "profile": profile or None, "created": now(),
                "created_by": created_by}).last_pk
        return Rule(**self.db["retention_rules"].get(rule_id))

    def remove_retention_rule(self, rule_id: int) -> None:
        with self.transaction():
            if not self.db.execute("DELETE FROM retention_rules WHERE id = ?",
                                   [rule_id]).rowcount:
                raise NotFound(N_("no retention rule with id %(id)s"), id=rule_id)

    def set_legal_hold(self, recording_id: int, reason: str | None) -> Recording:
        """Hold a recording (``reason`` says why: a case, a request) or release it."""
        if reason is not None:
            reason = clean_label(reason, "a hold's reason", NOTE_MAX)
            if not reason:
                raise InvalidInput(N_("say why the recording is held"))
        return self._set(recording_id, legal_hold=reason)

    def set_reviewed(self, recording_id: int, reviewed: bool) -> Recording:
        """A reviewer confirms the transcript (or takes the confirmation back)."""
        return self._set(recording_id, reviewed_at=now() if reviewed else None)

    def _set(self, recording_id: int, **fields) -> Recording:
        with self.transaction():
            self.get_recording(recording_id)
            self.db["recordings"].update(recording_id, {**fields, "updated": now()})
        return self.get_recording(recording_id)

    def retention_candidates(self, what: str, profile: str | None,
                             counted_before: str) -> list[Recording]:
        """Recordings a rule may erase: not held, not being recorded, counted from before
        ``counted_before`` (audio: from the transcript's confirmation; recordings: from
        when they were made), of ``profile`` (None: any)."""
        where = ["legal_hold IS NULL", "status != 'recording'"]
        if what == "audio":
            where += ["reviewed_at IS NOT NULL", "reviewed_at <= ?",
                      "audio_file IS NOT NULL", "audio_erased IS NULL"]
        else:
            where += ["created <= ?"]
        args: list = [counted_before]
        if profile:
            where.append("profile = ?")
            args.append(profile)
        return [recording_of(row) for row in self.db.query(
            f"SELECT * FROM recordings WHERE {' AND '.join(where)} ORDER BY id", args)]

    def record_retention_run(self, at: str, audio_erased: int, recordings_deleted: int,
                             trigger: str) -> Run:
        with self.transaction():
            run_id = self.db["retention_runs"].insert({
                "at": at, "audio_erased": audio_erased,
                "recordings_deleted": recordings_deleted, "trigger": trigger}).last_pk
        return Run(**self.db["retention_runs"].get(run_id))

    def last_retention_run(self) -> Run | None:
        rows = list(self.db.query("SELECT * FROM retention_runs ORDER BY id DESC LIMIT 1"))
        return Run(**rows[0]) if rows else None
