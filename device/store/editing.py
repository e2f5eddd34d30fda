"""Every change to a transcript is a revision: who, when, and the affected segments before
and after (with their words), so any change can be shown, undone, or redone.  Writers
name the segment revision they saw; a stale one raises EditConflict with what is stored."""

from __future__ import annotations

import json

from device.errors import N_, EditConflict, InvalidInput, RevisionNotFound, SegmentNotFound
from device.records import Revision, Segment, User
from device.said import Said, stored
from device.store._base import Rooms, now, revision_of, segment_of
from device.text import NAME_MAX, clean_label
from device.timing import retime_words

SEGMENT_MAX_CHARS = 20_000
"""A segment is a few sentences; a cap keeps an edit (or find & replace, whose growth
compounds) from storing megabytes."""


class EditingRooms(Rooms):
    def get_segment(self, segment_id: int) -> Segment:
        snaps = self._snapshots(None, [segment_id])
        if not snaps:
            raise SegmentNotFound(N_("no segment with id %(id)s"), id=segment_id)
        return segment_of(snaps[0])

    def segment_recording(self, segment_id: int) -> int:
        row = self.db.execute("SELECT recording_id FROM segments WHERE id = ?",
                              [segment_id]).fetchone()
        if row is None:
            raise SegmentNotFound(N_("no segment with id %(id)s"), id=segment_id)
        return row[0]

    def edit_segment(self, segment_id: int, text: str, revision: int,
                     user: User | None = None) -> Segment:
        """New text for one segment: unchanged words keep their times, changed ones are
        timed inside the segment (the revision keeps the old words for undo)."""
        text = text.strip()
        if not text:
            raise InvalidInput(N_("a segment cannot be empty: merge it with a neighbour instead"))
        with self.transaction():
            before = self._current(segment_id, revision)
            if before["text"] == text:
                return segment_of(before)
            after = {**before, "text": text, "words": _retimed(before, text),
                     "revision": before["revision"] + 1}
            self._change(before["recording_id"], "edit", Said(N_("edited a segment")), user,
                         [before], [after])
        return self.get_segment(segment_id)

    def confirm_segment(self, segment_id: int, revision: int,
                        user: User | None = None) -> Segment:
        """A reviewer listened and the text stands as the recogniser wrote it: a revision
        that changes nothing but clears the marks of where it was unsure."""
        with self.transaction():
            before = self._current(segment_id, revision)
            after = {**before, "revision": before["revision"] + 1}
            self._change(before["recording_id"], "confirm",
                         Said(N_("confirmed a segment as heard")),
                         user, [before], [after])
        return self.get_segment(segment_id)

    def set_speaker(self, segment_id: int, speaker: str | None, revision: int,
                    user: User | None = None) -> Segment:
        [segment] = self.assign_speaker(self.segment_recording(segment_id),
                                        [(segment_id, revision)], speaker, user)
        return segment

    def assign_speaker(self, recording_id: int, picks: list[tuple[int, int]],
                       speaker: str | None, user: User | None = None) -> list[Segment]:
        """One speaker (or none) for several segments at once, as one revision; ``picks``
        are (segment id, the revision the reviewer saw).  A stale pick refuses them all."""
        speaker = clean_label(speaker or "", "a speaker name", NAME_MAX) or None
        if len({segment_id for segment_id, _ in picks}) != len(picks):
            raise InvalidInput(N_("a segment is picked twice"))
        with self.transaction():
            before = [self._current(segment_id, revision) for segment_id, revision in picks]
            if any(s["recording_id"] != recording_id for s in before):
                raise InvalidInput(N_("every segment must belong to this recording"))
            after = [{**s, "speaker": speaker, "revision": s["revision"] + 1} for s in before]
            if before:
                note = (Said(N_("speaker → %(name)s"), name=speaker) if speaker
                        else Said(N_("speaker removed")))
                if len(before) > 1:
                    note = Said(N_("%(change)s for %(num)d segments"), change=note,
                                num=len(before))
                self._change(recording_id, "speaker", note, user, before, after)
        return [self.get_segment(segment_id) for segment_id, _ in picks]

    def relabel_speakers(self, recording_id: int, speakers: dict[int, str | None],
                         note: str, user: User | None = None) -> int:
        """Set the speakers of many segments (segment id -> speaker) as one revision, as
        diarizing again does; segments whose speaker stays are untouched.  Returns how many
        changed."""
        with self.transaction():
            before = [s for s in self._snapshots(recording_id)
                      if s["id"] in speakers and s["speaker"] != speakers[s["id"]]]
            after = [{**s, "speaker": speakers[s["id"]], "revision": s["revision"] + 1}
                     for s in before]
            if before:
                self._change(recording_id, "speaker", note, user, before, after)
        return len(before)

    def rename_speaker(self, recording_id: int, old: str, new: str,
                       user: User | None = None) -> int:
        """Rename a speaker on every segment of a recording; returns how many changed."""
        new = clean_label(new, "a speaker name", NAME_MAX)
        if not new:
            raise InvalidInput(N_("a speaker name cannot be empty"))
        with self.transaction():
            before = [s for s in self._snapshots(recording_id) if s["speaker"] == old]
            after = [{**s, "speaker": new, "revision": s["revision"] + 1} for s in before]
            if before:
                self._change(recording_id, "rename_speaker",
                             Said(N_("speaker %(old)s → %(new)s"), old=old, new=new), user,
                             before, after)
        return len(before)

    def merge_speakers(self, recording_id: int, speaker: str, into: str,
                       user: User | None = None) -> int:
        """Two labels that are one person: every segment of ``speaker`` goes to ``into``
        (which must be a speaker of the recording already); returns how many changed."""
        with self.transaction():
            snaps = self._snapshots(recording_id)
            labels = {s["speaker"] for s in snaps}
            for name in (speaker, into):
                if name not in labels:
                    raise InvalidInput(N_("%(name)s is not a speaker of this recording"), name=name)
            if speaker == into:
                raise InvalidInput(N_("choose two different speakers to merge"))
            before = [s for s in snaps if s["speaker"] == speaker]
            after = [{**s, "speaker": into, "revision": s["revision"] + 1} for s in before]
            self._change(recording_id, "merge_speakers", Said(
                N_("speaker %(speaker)s merged into %(into)s"), speaker=speaker, into=into),
                user, before, after)
        return len(before)

    def replace_text(self, recording_id: int, find: str, replacement: str,
                     user: User | None = None) -> int:
        """Find & replace (exact, case-sensitive) across a recording; returns the number of
        segments changed.  A segment the replacement would empty is left as it is."""
        if not find:
            raise InvalidInput(N_("nothing to find"))
        with self.transaction():
            before = [s for s in self._snapshots(recording_id) if find in s["text"]
                      and s["text"].replace(find, replacement).strip()]
            after = []
            for s in before:
                text = s["text"].replace(find, replacement).strip()
                after.append({**s, "text": text, "words": _retimed(s, text),
                              "revision": s["revision"] + 1})
            if before:
                self._change(recording_id, "replace", Said(
                    N_("replaced “%(find)s” with “%(replacement)s”"), find=find,
                    replacement=replacement),
                             user, before, after)
        return len(before)

    def split_segment(self, segment_id: int, at: int, revision: int,
                      user: User | None = None) -> tuple[Segment, Segment]:
        """Split a segment's text at character ``at``; the time is split where the words
        say (or in proportion to the characters when there are none)."""
        with self.transaction():
            before = self._current(segment_id, revision)
            text = before["text"]
            first, second = text[:at].strip(), text[at:].strip()
            if not first or not second:
                raise InvalidInput(N_("split position %(at)s leaves an empty segment"), at=at)
            words = before["words"]
            cut = _word_cut(words, at) if words else None
            if cut is not None:
                t = words[cut][0]
                head, tail = words[:cut], words[cut:]
            else:
                t = before["start"] + (before["end"] - before["start"]) * at / len(text)
                head = tail = []
            t = round(min(max(t, before["start"]), before["end"]), 3)
            left = {**before, "text": first, "end": t, "words": head,
                    "revision": before["revision"] + 1}
            right = {**before, "id": None, "text": second, "start": t, "words": tail,
                     "revision": 0}
            ids = self._change(before["recording_id"], "split", Said(N_("split a segment")), user,
                               [before], [left, right], structural=True)
        return self.get_segment(ids[0]), self.get_segment(ids[1])

    def merge_segments(self, segment_id: int, revision: int, next_revision: int,
                       user: User | None = None) -> Segment:
        """Merge a segment with the one after it."""
        with self.transaction():
            first = self._current(segment_id, revision)
            row = self.db.execute(
                "SELECT id FROM segments WHERE recording_id = ? AND idx > ? ORDER BY idx LIMIT 1",
                [first["recording_id"], first["idx"]]).fetchone()
            if row is None:
                raise InvalidInput(N_("the last segment has nothing after it to merge with"))
            second = self._current(row[0], next_revision)
            joiner = "" if _cjk_edge(first["text"], second["text"]) else " "
            merged = {**first, "text": first["text"] + joiner + second["text"],
                      "end": second["end"], "words": first["words"] + second["words"],
                      "revision": first["revision"] + 1}
            self._change(first["recording_id"], "merge", Said(N_("merged two segments")), user,
                         [first, second], [merged], structural=True)
        return self.get_segment(segment_id)

    def revisions(self, recording_id: int, limit: int = 1000) -> list[Revision]:
        """The history, newest first."""
        return [revision_of(row) for row in self.db.query(
            "SELECT * FROM revisions WHERE recording_id = ? ORDER BY id DESC LIMIT ?",
            [recording_id, limit])]

    def get_revision(self, revision_id: int) -> Revision:
        rows = list(self.db.query("SELECT * FROM revisions WHERE id = ?", [revision_id]))
        if not rows:
            raise RevisionNotFound(N_("no revision with id %(id)s"), id=revision_id)
        return revision_of(rows[0])

    def undo_revision(self, revision_id: int, user: User | None = None) -> Revision:
        """Put back the segments as they were before a revision, itself a new revision (so
        an undo can be undone).  Refused with EditConflict when a later change touched the
        same segments: undo that one first."""
        with self.transaction():
            revision = self.get_revision(revision_id)
            if revision.undone_by:
                raise EditConflict(N_("revision %(id)s was already undone (by revision "
                                      "%(by)s)"), id=revision_id, by=revision.undone_by)
            after_ids = [s["id"] for s in revision.after]
            current = {s["id"]: s for s in self._snapshots(None, after_ids)}
            for seg in revision.after:
                now_ = current.get(seg["id"])
                if now_ is None or _content(now_) != _content(seg):
                    raise EditConflict(
                        N_("a later change touched the same segments; undo that first"),
                        [segment_of(s) for s in current.values()])
            ids_before = {s["id"] for s in revision.before}
            restored = [{**s, "revision": max(s["revision"],
                                              current[s["id"]]["revision"]
                                              if s["id"] in current else 0) + 1}
                        for s in revision.before]
            structural = ids_before != set(after_ids)
            self._change(revision.recording_id, "undo",
                         Said(N_("undid: %(change)s"), change=revision.note), user,
                         list(current.values()), restored, structural=structural)
            new_id = self.db.execute("SELECT max(id) FROM revisions").fetchone()[0]
            self.db.execute("UPDATE revisions SET undone_by = ? WHERE id = ?",
                            [new_id, revision_id])
        return self.get_revision(new_id)

    def _current(self, segment_id: int, revision: int) -> dict:
        snaps = self._snapshots(None, [segment_id])
        if not snaps:
            raise SegmentNotFound(N_("no segment with id %(id)s"), id=segment_id)
        if snaps[0]["revision"] != revision:
            raise EditConflict(
                N_("segment %(id)s changed since you loaded it (revision %(now)s, yours "
                   "%(yours)s); here is the newer text"),
                [segment_of(snaps[0])], id=segment_id, now=snaps[0]["revision"], yours=revision)
        return snaps[0]

    def _change(self, recording_id: int, kind: str, note: str, user: User | None,
                before: list[dict], after: list[dict], structural: bool = False) -> list[int]:
        """Replace the ``before`` segments by the ``after`` ones and record the revision;
        returns the ids of the ``after`` segments.  Runs inside the caller's transaction.
        Every edit comes through here, so here the length of a segment is capped."""
        for snap in after:
            if len(snap["text"]) > SEGMENT_MAX_CHARS:
                raise InvalidInput(f"a segment may hold {SEGMENT_MAX_CHARS:,} characters; this "
                                   f"{kind} would make one of {len(snap['text']):,}")
        old_ids = [s["id"] for s in before]
        marks = ",".join("?" * len(old_ids))
        self.db.execute(f"DELETE FROM segments_fts WHERE rowid IN ({marks})", old_ids)
        self.db.execute(f"DELETE FROM words WHERE segment_id IN ({marks})", old_ids)
        self.db.execute(f"DELETE FROM segments WHERE id IN ({marks})", old_ids)
        ids = []
        for n, snap in enumerate(after):
            idx = snap["idx"] if not structural else -1_000_000 - n  # renumbered below
            ids.append(self._insert_segment(recording_id, idx, segment_of(snap)))
        if structural:
            order = [r[0] for r in self.db.execute(
                "SELECT id FROM segments WHERE recording_id = ? ORDER BY start, idx",
                [recording_id])]
            self.db.execute("UPDATE segments SET idx = -1 - idx WHERE recording_id = ? "
                            "AND idx >= 0", [recording_id])
            self.db.conn.executemany("UPDATE segments SET idx = ? WHERE id = ?",
                                [(i, sid) for i, sid in enumerate(order)])
        after_stored = self._snapshots(None, ids)
        self._add_revision(recording_id, kind, note, user, before, after_stored)
        self.db["recordings"].update(recording_id, {"updated": now()})
        return ids

    def _add_revision(self, recording_id: int, kind: str, note: str, user: User | None,
                      before: list[dict], after: list[dict]) -> int:
        return self.db["revisions"].insert({
            "recording_id": recording_id, "kind": kind, "note": stored(note),
            "user_id": user.id if user else None, "username": user.username if user else None,
            "before": json.dumps(before, ensure_ascii=False),
            "after": json.dumps(after, ensure_ascii=False), "created": now(),
        }).last_pk


def _retimed(snap: dict, text: str) -> list[list]:
    """The snapshot's words for its new ``text`` (see ``device.timing``)."""
    words = retime_words(segment_of(snap).words, text, snap["start"], snap["end"])
    return [[w.start, w.end, w.text, w.probability] for w in words]


def _content(snap: dict) -> tuple:
    return snap["text"], snap["speaker"], snap["start"], snap["end"]


def _word_cut(words: list, at: int) -> int | None:
    """Index of the first word that starts at or after character ``at`` of the joined text
    (approximate when the text was rewritten after recognition: numbers, punctuation)."""
    position = 0
    for i, w in enumerate(words):
        text = w[2] if i else w[2].lstrip()
        if i > 0 and position + len(text) - len(text.lstrip()) >= at:
            return i
        position += len(text)
    return None


def _cjk_edge(left: str, right: str) -> bool:
    """Chinese text joins without a space."""
    return bool(left and right and (left[-1] >= "\u2e80" or right[0] >= "\u2e80"))
