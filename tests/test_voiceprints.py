"""Remembered voices: their own database, matched one to one above the threshold, and gone
from the disk when deleted; speakers merged as one revision.  (With the real speaker model,
end to end: tests/test_speakers.py.)"""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from device.databases import open_store
from device.errors import InvalidInput, NotFound
from device.speakers.voiceprints import MATCH_SECONDS, SAME_VOICE, match, suggestion
from device.store.voiceprints import Voiceprints
from tests.webutil import stored_transcript


def _unit(rng, n: int = 256) -> np.ndarray:
    x = rng.standard_normal(n).astype(np.float32)
    return x / np.linalg.norm(x)


def _enrol(prints: Voiceprints, name: str, vector: np.ndarray, recording_id: int = 1):
    return prints.enrol(name, vector, seconds=40, enrolled_by="rita", recording_id=recording_id,
                        recording_title="采访", speaker="说话人1", consent="signed the form")


def test_voiceprints_are_kept_apart_named_once_and_overwritten_when_deleted(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "voiceprints.db"
    vector = _unit(rng)
    with Voiceprints(path) as prints:
        li = _enrol(prints, " 李明？ ", vector * 3)  # a trailing question mark is not a name
        assert (li.name, li.consent, li.seconds) == ("李明", "signed the form", 40.0)
        needle = prints.get(li.id).embedding
        assert np.allclose(np.frombuffer(needle, dtype="<f4"), vector, atol=1e-6)  # unit
        assert any(needle in f.read_bytes() for f in tmp_path.glob("voiceprints.db*"))
        with pytest.raises(InvalidInput, match="already remembered"):
            _enrol(prints, "李明", _unit(rng))
        with pytest.raises(InvalidInput, match="needs the person's name"):
            _enrol(prints, "？", _unit(rng))
        with pytest.raises(InvalidInput, match="256 finite numbers"):
            _enrol(prints, "王芳", np.full(256, np.nan))
        wang = _enrol(prints, "王芳", _unit(rng), recording_id=2)
        prints.record_uses(5, [(li.id, "李明?", 0.93)])
        prints.record_uses(6, [(li.id, "李明?", 0.91), (wang.id, "王芳?", 0.9)])
        prints.record_uses(6, [(li.id, "李明?", 0.92)])  # a rerun replaces the recording's
        assert [(u.recording_id, u.similarity) for u in prints.uses(li.id)] == [
            (6, 0.92), (5, 0.93)]
        assert prints.uses(wang.id) == []
        prints.forget_recording(5)  # deleted
        assert [u.recording_id for u in prints.uses(li.id)] == [6]
        prints.forget_recording(2)
        assert prints.get(wang.id).recording_id is None
        # the admin's own copy; never over an existing file
        prints.backup(tmp_path / "copy.db")
        with pytest.raises(InvalidInput, match="exists already"):
            prints.backup(tmp_path / "copy.db")
        gone = prints.delete(li.id)
        assert gone.name == "李明" and [p.name for p in prints.all()] == ["王芳"]
        with pytest.raises(NotFound):
            prints.delete(li.id)
        assert prints.uses(li.id) == []
        # the embedding's bytes are nowhere in the database's files any more, at once
        for f in tmp_path.glob("voiceprints.db*"):
            assert needle not in f.read_bytes(), f.name
    copy = sqlite3.connect(tmp_path / "copy.db")
    assert copy.execute("SELECT count(*) FROM voiceprints").fetchone()[0] == 2


def test_a_voiceprint_names_the_most_alike_speaker_only_above_the_threshold():
    rng = np.random.default_rng(2)
    li, wang = _unit(rng), _unit(rng)
    prints = ["li", "wang"]
    vectors = np.stack([li, wang])

    def near(v: np.ndarray, cosine: float) -> np.ndarray:
        other = _unit(rng)
        other -= (other @ v) * v
        return cosine * v + np.sqrt(1 - cosine**2) * other / np.linalg.norm(other)

    speakers = np.stack([near(li, 0.95), near(li, 0.92), near(wang, SAME_VOICE - 0.02),
                         _unit(rng)])
    found = match(speakers, [30.0, 30.0, 30.0, 30.0], prints, vectors)
    # li names speaker 0 (the most alike), not speaker 1 too; wang is not alike enough
    assert {k: (v[0], round(v[1], 2)) for k, v in found.items()} == {0: ("li", 0.95)}
    # too little speech to tell: not named, and the next most alike takes the name
    found = match(speakers, [MATCH_SECONDS - 1, 30.0, 30.0, 30.0], prints, vectors)
    assert list(found) == [1] and found[1][0] == "li"
    assert match(speakers, [30.0] * 4, [], np.zeros((0, 256))) == {}
    assert suggestion("李明") == "李明?"


def test_two_speakers_merge_as_one_revision_that_can_be_undone(settings):
    rec = stored_transcript(settings)  # speakers A, B, A
    with open_store(settings) as store:
        assert store.merge_speakers(rec, "B", "A") == 1
        assert {s.speaker for s in store.segments(rec)} == {"A"}
        revision = store.revisions(rec)[0]
        assert (revision.kind, revision.note) == ("merge_speakers", "speaker B merged into A")
        store.undo_revision(revision.id)
        assert [s.speaker for s in store.segments(rec)] == ["A", "B", "A"]
        with pytest.raises(InvalidInput, match="C is not a speaker"):
            store.merge_speakers(rec, "C", "A")
        with pytest.raises(InvalidInput, match="two different speakers"):
            store.merge_speakers(rec, "A", "A")
