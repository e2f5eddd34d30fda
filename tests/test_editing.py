"""Editing a transcript: revisions with conflicts (409), history and undo, speakers,
find & replace, split/merge, summaries edited by hand, and exports of the latest text."""

from __future__ import annotations

import io
import json

import pytest

from device.databases import open_store
from device.records import Segment
from tests.webutil import make_box, stored_transcript


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    """One box for the module (each test stores its own recording): a box's three accounts
    cost six Argon2 hashes."""
    from device.settings import Settings

    data = tmp_path_factory.mktemp("editing") / "data"
    return make_box(Settings(data_dir=data, models_dir=Settings.load().models_dir,
                             auto_summarize=False))


@pytest.fixture
def rec(box):
    return stored_transcript(box.settings)


def segments(box, rec):
    return box.reviewer.api("GET", f"/api/recordings/{rec}").json()["segments"]


def test_edit_bumps_the_revision_and_a_stale_write_gets_409_with_the_newer_text(box, rec):
    first = segments(box, rec)[0]
    saved = box.reviewer.api("PATCH", f"/api/segments/{first['id']}",
                             {"text": "We will review the plan on Tuesday.",
                              "revision": first["revision"]})
    assert saved.status_code == 200
    assert saved.json()["revision"] == first["revision"] + 1
    # The words that stayed keep their times; "plan" fills the gap "budget" leaves (every
    # word's timing was dropped before, and the segment no longer highlighted or seeked).
    before = {w["text"].strip(): (w["start"], w["end"]) for w in first["words"]}
    after = {w["text"].strip(): (w["start"], w["end"]) for w in saved.json()["words"]}
    assert list(after) == ["We", "will", "review", "the", "plan", "on", "Tuesday."]
    assert all(after[w] == before[w] for w in after if w != "plan")
    assert after["plan"] == (before["the"][1], before["on"][0])  # the gap "budget" was in
    stale = box.admin.api("PATCH", f"/api/segments/{first['id']}",
                          {"text": "Someone else's version", "revision": first["revision"]})
    assert stale.status_code == 409
    assert stale.json()["current"][0]["text"] == "We will review the plan on Tuesday."
    assert segments(box, rec)[0]["text"] == "We will review the plan on Tuesday."
    empty = box.reviewer.api("PATCH", f"/api/segments/{first['id']}",
                             {"text": "  ", "revision": first["revision"] + 1})
    assert empty.status_code == 400
    missing = box.reviewer.api("PATCH", "/api/segments/99999", {"text": "x", "revision": 0})
    assert missing.status_code == 404


def test_history_records_who_and_what_and_undo_restores_words(box, rec):
    first = segments(box, rec)[0]
    box.reviewer.api("PATCH", f"/api/segments/{first['id']}",
                     {"text": "Edited text", "revision": first["revision"]})
    history = box.reviewer.api("GET", f"/api/recordings/{rec}/revisions").json()
    assert history[0]["kind"] == "edit" and history[0]["username"] == "rita"
    assert history[0]["before"][0]["text"] == first["text"]
    assert history[0]["after"][0]["text"] == "Edited text"
    undone = box.reviewer.api("POST", f"/api/revisions/{history[0]['id']}/undo")
    assert undone.status_code == 200
    restored = segments(box, rec)[0]
    assert restored["text"] == first["text"] and len(restored["words"]) == len(first["words"])
    assert restored["revision"] > first["revision"] + 1  # stale writers still get 409
    again = box.reviewer.api("POST", f"/api/revisions/{history[0]['id']}/undo")
    assert again.status_code == 409
    # the undo is itself a revision, and undoing it redoes the edit
    latest = box.reviewer.api("GET", f"/api/recordings/{rec}/revisions").json()[0]
    assert latest["kind"] == "undo"
    box.reviewer.api("POST", f"/api/revisions/{latest['id']}/undo")
    assert segments(box, rec)[0]["text"] == "Edited text"


def test_undo_is_refused_when_a_later_change_touched_the_segment(box, rec):
    first = segments(box, rec)[0]
    one = box.reviewer.api("PATCH", f"/api/segments/{first['id']}",
                           {"text": "First change", "revision": first["revision"]}).json()
    box.reviewer.api("PATCH", f"/api/segments/{first['id']}",
                     {"text": "Second change", "revision": one["revision"]})
    history = box.reviewer.api("GET", f"/api/recordings/{rec}/revisions").json()
    response = box.reviewer.api("POST", f"/api/revisions/{history[1]['id']}/undo")
    assert response.status_code == 409 and "later change" in response.json()["detail"]
    assert segments(box, rec)[0]["text"] == "Second change"


def test_speakers_rename_everywhere_and_reassign_one_segment(box, rec):
    renamed = box.reviewer.api("POST", f"/api/recordings/{rec}/speakers/rename",
                               {"old": "A", "new": "王经理"})
    assert renamed.json() == {"changed": 2}
    assert [s["speaker"] for s in segments(box, rec)] == ["王经理", "B", "王经理"]
    second = segments(box, rec)[1]
    moved = box.reviewer.api("POST", f"/api/segments/{second['id']}/speaker",
                             {"speaker": "王经理", "revision": second["revision"]})
    assert moved.status_code == 200 and moved.json()["speaker"] == "王经理"
    assert len(segments(box, rec)[0]["words"]) > 0  # a speaker change keeps word timings


def test_find_and_replace_across_a_recording_is_one_revision(box):
    rec = stored_transcript(box.settings, texts=["quokka one", "no match", "quokka two"])
    response = box.reviewer.api("POST", f"/api/recordings/{rec}/replace",
                                {"find": "quokka", "replace": "plan"})
    assert response.json() == {"changed": 2}
    assert [s["text"] for s in segments(box, rec)] == ["plan one", "no match", "plan two"]
    history = box.reviewer.api("GET", f"/api/recordings/{rec}/revisions").json()
    assert len(history) == 1 and len(history[0]["before"]) == 2
    box.reviewer.api("POST", f"/api/revisions/{history[0]['id']}/undo")
    assert [s["text"] for s in segments(box, rec)] == ["quokka one", "no match", "quokka two"]
    search = box.reviewer.client.get("/", params={"q": "quokka"}).text
    assert search.count("<mark>quokka</mark>") == 2  # the index follows edits


def test_no_edit_path_stores_a_segment_over_the_cap(box):
    """Find & replace bypassed the cap and compounded: "a" replaced by 1,000 × "Q" in a
    2,000-character segment stored 2,000,000 characters."""
    rec = stored_transcript(box.settings, texts=["a" * 2000, "b" * 12_000, "c" * 12_000])
    before = segments(box, rec)
    grown = box.reviewer.api("POST", f"/api/recordings/{rec}/replace",
                             {"find": "a", "replace": "Q" * 1000})
    assert grown.status_code == 400 and "20,000 characters" in grown.json()["detail"]
    second, third = before[1], before[2]
    merged = box.reviewer.api("POST", f"/api/segments/{second['id']}/merge",
                              {"revision": second["revision"],
                               "next_revision": third["revision"]})
    assert merged.status_code == 400
    edited = box.reviewer.api("PATCH", f"/api/segments/{second['id']}",
                              {"text": "b" * 20_001, "revision": second["revision"]})
    assert edited.status_code == 422
    assert segments(box, rec) == before  # nothing changed
    assert box.reviewer.api("GET", f"/api/recordings/{rec}/revisions").json() == []


def test_split_and_merge_keep_times_and_order(box, rec):
    first = segments(box, rec)[0]  # "We will review the budget on Tuesday." with words
    split = box.reviewer.api("POST", f"/api/segments/{first['id']}/split",
                             {"position": 14, "revision": first["revision"]})
    assert split.status_code == 200
    left, right = split.json()["segments"]
    assert (left["text"], right["text"]) == ("We will review", "the budget on Tuesday.")
    assert left["start"] == first["start"] and right["end"] == first["end"]
    assert left["end"] == right["start"] == right["words"][0]["start"]
    order = segments(box, rec)
    assert [s["id"] for s in order][:2] == [left["id"], right["id"]] and len(order) == 4
    bad = box.reviewer.api("POST", f"/api/segments/{left['id']}/split",
                           {"position": 99, "revision": left["revision"]})
    assert bad.status_code == 400
    merged = box.reviewer.api("POST", f"/api/segments/{left['id']}/merge",
                              {"revision": left["revision"], "next_revision": right["revision"]})
    assert merged.status_code == 200
    assert merged.json()["text"] == first["text"] and merged.json()["end"] == first["end"]
    assert len(segments(box, rec)) == 3
    last = segments(box, rec)[-1]
    nothing = box.reviewer.api("POST", f"/api/segments/{last['id']}/merge",
                               {"revision": last["revision"], "next_revision": 0})
    assert nothing.status_code == 400
    # undo the merge, then the split: back to the original segments, ids and all
    history = box.reviewer.api("GET", f"/api/recordings/{rec}/revisions").json()
    for revision in history:
        assert box.reviewer.api("POST", f"/api/revisions/{revision['id']}/undo").status_code == 200
    assert [(s["id"], s["text"]) for s in segments(box, rec)] == [
        (s["id"], s["text"]) for s in [first, *segments(box, rec)[1:]]]
    assert segments(box, rec)[0]["words"] == first["words"]


def test_a_new_transcription_keeps_reviewers_edits_in_the_history(settings):
    rec = stored_transcript(settings)
    with open_store(settings) as store:
        first = store.segments(rec)[0]
        store.edit_segment(first.id, "Reviewed text", first.revision)
        job = store.claim(1, 0.0, store.enqueue("transcribe", rec).id)
        store.complete_transcription(job.id, rec, [Segment(0, 2, "fresh machine text")],
                                     language="en")
        assert [s.text for s in store.segments(rec)] == ["fresh machine text"]
        retranscribed = store.revisions(rec)[0]
        assert retranscribed.kind == "retranscribe"
        store.undo_revision(retranscribed.id)
        assert store.segments(rec)[0].text == "Reviewed text"


def test_exports_reflect_the_latest_edits(box, rec):
    first = segments(box, rec)[0]
    box.reviewer.api("PATCH", f"/api/segments/{first['id']}",
                     {"text": "Edited & <exported>", "revision": first["revision"]})
    get = box.reviewer.client.get
    txt = get(f"/recordings/{rec}/export.txt")
    assert txt.headers["content-disposition"] == f'attachment; filename="recording-{rec}.txt"'
    assert "[#1 00:00] A: Edited & <exported>" in txt.text  # numbered as summaries cite
    srt = get(f"/recordings/{rec}/export.srt").text
    assert srt.startswith("1\n00:00:00,000 --> 00:00:03,500\nA: Edited & <exported>\n")
    assert "2\n00:00:04,000 --> 00:00:07,500\nB: 预算下周二再讨论。" in srt
    vtt = get(f"/recordings/{rec}/export.vtt").text
    assert vtt.startswith("WEBVTT\n") and "00:00:04.000 --> 00:00:07.500\n<v B>预算" in vtt
    md = get(f"/recordings/{rec}/export.md").text
    assert md.startswith("# Budget meeting") and "**A** Edited & <exported>" in md
    data = json.loads(get(f"/recordings/{rec}/export.json").text)
    assert data["segments"][0]["text"] == "Edited & <exported>"
    assert data["segments"][1]["speaker"] == "B"
    from docx import Document

    response = get(f"/recordings/{rec}/export.docx")
    assert response.headers["content-type"].startswith("application/vnd.openxmlformats")
    paragraphs = [p.text for p in Document(io.BytesIO(response.content)).paragraphs]
    assert "Budget meeting" in paragraphs
    assert "[#1 00:00] A: Edited & <exported>" in paragraphs
    assert get(f"/recordings/{rec}/export.exe").status_code == 404


def test_summary_can_be_edited_and_regenerated(box, rec):
    with open_store(box.settings) as store:
        ids = [s.id for s in store.segments(rec)]
        store.add_summary(rec, {"title": "Budget", "summary": "Review on Tuesday.",
                                "key_points": [{"text": "Review on Tuesday", "segments": [ids[0]]}],
                                "decisions": [], "action_items": [], "keywords": ["budget"],
                                "language": "en"}, [], model_id="qwen", prompt_version="1",
                          transcript_hash=store.transcript_hash(rec))
    page = box.reviewer.client.get(f"/recordings/{rec}").text
    assert f'data-cite="{ids[0]}"' in page and "Review on Tuesday" in page
    edited = box.reviewer.api("PUT", f"/api/recordings/{rec}/summary", {
        "version": 1, "content": {"key_points": [
            {"text": "Review 3 times on Tuesday", "segments": [ids[0]]}]}})
    assert edited.status_code == 200
    body = edited.json()
    assert body["version"] == 2 and body["model_id"] == "edited by rita"
    assert body["content"]["title"] == "Budget"  # fields not sent are kept
    assert [f["term"] for f in body["flags"]] == ["3"]  # the grounding check runs again
    assert "⚠ 3" in box.reviewer.client.get(f"/recordings/{rec}").text
    stale = box.reviewer.api("PUT", f"/api/recordings/{rec}/summary",
                             {"version": 1, "content": {"title": "Old"}})
    assert stale.status_code == 409
    job = box.reviewer.api("POST", f"/api/recordings/{rec}/summarize",
                           {"model": None, "notes_model": "qwen2.5-coder-0.5b-instruct"})
    assert job.status_code == 200 and job.json()["kind"] == "summarize"
    assert job.json()["params"] == {"notes_model": "qwen2.5-coder-0.5b-instruct"}
    again = box.reviewer.api("POST", f"/api/recordings/{rec}/summarize", {})
    assert again.json()["id"] == job.json()["id"]  # one summary job at a time


def test_summarize_waits_for_the_transcript(box):
    with open_store(box.settings) as store:
        rec = store.create_recording("Queued", "a.wav")
    response = box.reviewer.api("POST", f"/api/recordings/{rec.id}/summarize", {})
    assert response.status_code == 409


def test_a_summary_edit_of_the_wrong_shape_is_refused_and_exports_keep_working(box):
    """{"summary": {"x": 1}} was stored and the Markdown export then answered 500; a
    vertical tab in stored text made the DOCX export answer 500."""
    rec = stored_transcript(box.settings, texts=["Budget\x0b review on Tuesday."])
    with open_store(box.settings) as store:
        store.add_summary(rec, {"title": "Budget", "summary": "Review.", "key_points": [],
                                "decisions": [], "action_items": [], "keywords": [],
                                "language": "en"}, [], model_id="m", prompt_version="1",
                          transcript_hash=store.transcript_hash(rec))
    url = f"/api/recordings/{rec}/summary"
    for content in ({"summary": {"x": 1}}, {"key_points": "one"},
                    {"key_points": [{"text": "x", "segments": ["1"]}]},
                    {"action_items": [{"owner": "Li", "segments": [1]}]}):
        response = box.reviewer.api("PUT", url, {"content": content, "version": 1})
        assert response.status_code == 400, content
    assert box.reviewer.api("PUT", url, {"content": {"summary": "Fine."}, "version": 1}
                            ).status_code == 200
    for fmt in ("md", "docx", "txt", "json"):
        assert box.reviewer.client.get(f"/recordings/{rec}/export.{fmt}").status_code == 200


def test_one_speaker_for_several_picked_segments_is_one_revision(box):
    """A speaker was a browser prompt() per segment; now a reviewer picks segments and
    assigns one of the recording's speakers (or a new one) to all of them at once."""
    rec = stored_transcript(box.settings, texts=["one", "two", "three"])
    first, second, third = segments(box, rec)
    picks = [{"id": s["id"], "revision": s["revision"]} for s in (first, third)]
    url = f"/api/recordings/{rec}/speakers/assign"
    assigned = box.reviewer.api("POST", url, {"speaker": "李明", "segments": picks})
    assert assigned.status_code == 200
    assert [s["speaker"] for s in segments(box, rec)] == ["李明", second["speaker"], "李明"]
    history = box.reviewer.api("GET", f"/api/recordings/{rec}/revisions").json()
    assert len(history) == 1 and len(history[0]["after"]) == 2
    stale = box.reviewer.api("POST", url, {"speaker": "王", "segments": picks})  # old revisions
    assert stale.status_code == 409
    assert [s["speaker"] for s in segments(box, rec)] == ["李明", second["speaker"], "李明"]
    twice = [{"id": second["id"], "revision": second["revision"]}] * 2
    assert box.reviewer.api("POST", url, {"speaker": "x", "segments": twice}).status_code == 400
    box.reviewer.api("POST", f"/api/revisions/{history[0]['id']}/undo")
    assert [s["speaker"] for s in segments(box, rec)] == [s["speaker"] for s in (first, second,
                                                                                 third)]
