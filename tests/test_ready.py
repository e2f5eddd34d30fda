"""Ready at stop: the final pass runs during the recording, and the transcript after stop is
the one a pass over the whole file gives."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from device import audio
from device.capture import FileSource
from device.databases import open_store
from device.jobs import Runner
from device.pipeline import recognize, select_profile
from device.ready import CaptureReader, Held, decidable
from device.recognize.timeline import Timeline
from device.recorder import Recorder, recover_interrupted
from device.settings import PROJECT_ROOT
from device.store import Store
from device.vad import SpeechChunk
from tests.conftest import SPEECH_DIR, wait_until

SR = audio.SAMPLE_RATE


def _many_voices(path, gap: float = 0.6, seconds: float = 100.0) -> float:
    """Real clips of the dev set and of ../shared/speech, each once, one after the other,
    for about ``seconds``."""
    dev = SPEECH_DIR.parent / "speech-dev"
    if not (dev / "manifest.tsv").is_file():
        pytest.skip(f"the dialect dev set is not present ({dev}/manifest.tsv): a recording "
                    "of several windows needs its clips")
    pieces, total = [], 0.0
    for directory in (dev, SPEECH_DIR):
        with open(directory / "manifest.tsv", encoding="utf-8") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                if total < seconds:
                    pieces += [audio.decode(directory / row["file"]), np.zeros(int(gap * SR))]
                    total += pieces[-2].size / SR + gap
    samples = np.concatenate(pieces).astype(np.float32)
    audio.write_wav(path, samples)
    return samples.size / SR


def _windows_kept(store: Store, recording_id: int) -> int:
    """Decoded windows kept, not auto mode's language detections and trials."""
    return store.db.execute("SELECT count(*) FROM decoded_windows WHERE recording_id = ? AND "
                            "json_type(value, '$.window') IS NOT NULL",
                            [recording_id]).fetchone()[0]


def test_the_decided_windows_are_the_whole_recordings_first_windows():
    chunks = [SpeechChunk(i * 8 * SR, (i * 8 + 6) * SR) for i in range(12)]  # 6 s each
    whole = Timeline(chunks).windows()
    for n in range(len(chunks) + 1):
        decided = decidable(chunks[:n])
        windows = Timeline(decided).windows() if decided else []
        assert windows == whole[: len(windows)]
        assert not decided or len(windows) == len(Timeline(chunks[:n]).windows()) - 1


@pytest.mark.parametrize("sealed", [False, True], ids=["plain", "sealed"])
def test_the_capture_reader_reads_what_the_segment_files_hold(tmp_path, sealed):
    import os

    from device.storage import SegmentWriter, join

    key = os.urandom(32) if sealed else None
    rng = np.random.default_rng(3)
    written = (rng.standard_normal(5 * SR) * 0.1).astype(np.float32)
    writer = SegmentWriter(tmp_path / "capture", segment_seconds=1.0, data_key=key)
    reader, read = CaptureReader(tmp_path / "capture", key), []
    held = Held(10.0)  # what the final pass holds of it, in 16 bits
    for block in np.array_split(written, 37):
        writer.write(block)
        held.append(samples := reader.read())
        read.append(audio.from_pcm16(samples))
    writer.close()
    held.append(samples := reader.read())
    read.append(audio.from_pcm16(samples))
    if sealed:  # what a box stores is the sealed segments, read as one WAV file
        whole = audio.decode(audio.SealedAudio(tmp_path / "capture", key))
    else:
        join(tmp_path / "capture", tmp_path / "joined.wav")
        whole = audio.decode(tmp_path / "joined.wav")
    assert np.array_equal(np.concatenate(read), whole) and whole.size == written.size
    assert len(held) == whole.size and held[12345:23456].dtype == np.float32
    for cut in (slice(None), slice(12345, 23456), slice(4 * SR, None), slice(7, 7)):
        assert np.array_equal(held[cut], whole[cut])  # bit for bit, as the file decodes
    assert not held.holds(5 * SR + 1)


@pytest.mark.slow
def test_a_recording_is_final_passed_diarised_and_noted_while_it_is_made(
        settings, engines, tmp_path, caplog):
    from contextlib import closing

    from device.speakers.diarize import find_speakers, label
    from device.summarize import PROMPT_VERSION, Plan
    from device.summary_job import load_summarizer
    from device.summary_text import Chunk, noted_parts, notes_so_far

    small = "qwen2.5-coder-0.5b-instruct"
    settings = settings.replace(auto_summarize=True, summary_model=small, notes_chunk_chars=100)
    _many_voices(tmp_path / "voices.wav", seconds=240)
    recorder = Recorder(settings, engines, live=False, ahead=True)
    events = recorder.subscribe()
    recording = recorder.start(FileSource(tmp_path / "voices.wav", speed=2.0))  # auto mode
    # a minute recorded, then paused while the final pass and the notes catch up
    wait_until(lambda: recorder.status()["seconds"] >= 60, 60, "a minute recorded")
    recorder.pause()
    with open_store(settings) as store:
        # the notes on the first window's text may be taken before the next window is
        # decoded: both are waited for
        wait_until(lambda: (store.get_recording(recording.id).final_pass_until or 0) > 30, 90,
                   "the final pass past the first window while recording")
        wait_until(lambda: store.noted_chunks(recording.id), 60, "notes taken while recording")
    wait_until(lambda: recorder.status()["notes_until"], 5, "the page told of the notes")
    recording = recorder.stop()
    told = [e for e in iter(lambda: None if events.empty() else events.get_nowait(), None)
            if e["type"] == "final_pass"]
    with open_store(settings) as store:
        kept = _windows_kept(store, recording.id)
        assert kept >= 2, "the final pass decoded nothing while recording"
        assert store.get_recording(recording.id).final_pass_until > 30
        noted = store.noted_chunks(recording.id)
        assert store.get_recording(recording.id).notes_until == noted[-1][-1][1]
        # the Record page was told how far both got
        assert told and told[-1]["until"] > 0 and told[-1]["notes_until"] > 0
        voices = store.db.execute("SELECT count(*) FROM decoded_windows WHERE key LIKE "
                                  "'voice:%'").fetchone()[0]
        assert voices > 20, "no voice window was embedded while recording"
        runner = Runner(settings, engines)
        [job] = store.jobs_for(recording.id)
        with caplog.at_level("INFO", logger="tingji.speakers"):
            assert runner.run(store, runner.claim(store, job.id)), store.get_job(job.id).error
        said = re.search(r"speakers: (\d+) voice windows embedded during the recording taken",
                         caplog.text)
        assert said and int(said[1]) >= voices  # every one kept was taken
        taken = engines.recognizer("whisper-base").report.windows_taken
        final = [(s.start, s.end, s.text, s.speaker) for s in store.segments(recording.id)]
        assert store.db.execute("SELECT count(*) FROM decoded_windows").fetchone()[0] == 0
        stored = audio.decode(settings.audio_dir / store.get_recording(recording.id).audio_file)
        [summarize] = [j for j in store.jobs_for(recording.id) if j.kind == "summarize"]
        assert runner.run(store, runner.claim(store, summarize.id)), \
            store.get_job(summarize.id).error
        [summary] = store.summaries(recording.id)
        read_left = store.db.execute("SELECT count(*) FROM summary_ahead").fetchone()[0]
        segments = [s for s in store.segments(recording.id) if s.text.strip()]
        language = store.get_recording(recording.id).language
        notes = {r[0]: json.loads(r[1]) for r in store.db.execute(
            "SELECT key, value FROM summary_notes WHERE recording_id = ? AND ahead = 1",
            [recording.id])}
    # every window decoded ahead was taken, none decoded twice (auto mode decodes up to six
    # windows at a time, and this recording has fewer)
    assert taken == kept
    # the transcript and its speakers are those a pass over the whole file gives, from
    # scratch
    speech = engines.detector.speech_chunks(stored)
    whole = recognize(engines, settings, stored, speech, select_profile(settings, "auto"))
    turns = find_speakers(engines.speaker_encoder(), stored, speech).turns
    assert final == [(s.start, s.end, s.text, s.speaker) for s in label(whole.segments, turns)]
    assert len({speaker for *_, speaker in final}) >= 2
    # the summary cut the transcript as the notes were taken and took their notes; the
    # rest (what came after, and speech the first pass lost, found after stop) it read
    # with them in its one call
    chunks = [Chunk.of(part, language, spans) for part, spans in noted_parts(segments, noted)[0]]
    keys = [c.key(small, PROMPT_VERSION, False) for c in chunks]
    assert summary.content["notes_kept"] == sum(k in notes for k in keys) >= 1
    assert summary.content["chunks"] == summary.content["notes_kept"] + 1
    # and what it took is what it would have written itself after stop
    first = next(c for c, k in zip(chunks, keys, strict=True) if k in notes)
    with closing(load_summarizer(settings, small)) as reader:
        again = reader.chunk_notes(Plan.of(first.segments, first.language, extract=False),
                                   first, "")
        # its one call began with all those notes, read into the model while recording
        # (and kept no longer)
        cited, line = [], 1
        for chunk, key in zip(chunks, keys, strict=True):
            cited.append(chunk.cited(notes[key], line))
            line += len(chunk.lines)
        start = reader.generator.prompt_start(Plan.of(segments, language).system,
                                              notes_so_far(cited))
    assert again == notes[first.key(small, PROMPT_VERSION, False)]
    assert summary.content["read_ahead"] == len(start) and read_left == 0


@pytest.mark.slow
def test_what_the_final_pass_kept_before_a_kill_9_is_taken_after_recovery(
        settings, engines, tmp_path):
    settings = settings.replace(diarize=False)
    _many_voices(tmp_path / "voices.wav")
    open_store(settings).close()
    # the recorder and its final pass in a process group of their own, killed together as a
    # power cut takes the whole box
    box = subprocess.Popen(
        [sys.executable, "-m", "device", "record", "--source", f"file:{tmp_path}/voices.wav",
         "--speed", "3", "--no-live", "--no-final"], cwd=PROJECT_ROOT, start_new_session=True,
        env={**os.environ, "TINGJI_DATA_DIR": str(settings.data_dir), "TINGJI_DIARIZE": "0"},
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and box.poll() is None:
            with open_store(settings) as store:
                if _windows_kept(store, 1):
                    break
            time.sleep(0.1)
    finally:
        os.killpg(box.pid, signal.SIGKILL)
        box.wait(10)
    assert box.returncode == -signal.SIGKILL, box.stderr.read().decode()[-2000:]
    with open_store(settings) as store:
        kept = _windows_kept(store, 1)
        assert kept and store.get_recording(1).status == "recording"
    assert recover_interrupted(settings) == [1]
    with open_store(settings) as store:
        [job] = store.jobs_for(1)
        runner = Runner(settings, engines)
        assert runner.run(store, runner.claim(store, job.id)), store.get_job(job.id).error
        taken = engines.recognizer("whisper-base").report.windows_taken
        final = [(s.start, s.end, s.text) for s in store.segments(1)]
        stored = audio.decode(settings.audio_dir / store.get_recording(1).audio_file)
    assert taken == kept  # reused, not decoded again
    whole = recognize(engines, settings, stored, engines.detector.speech_chunks(stored),
                      select_profile(settings, "auto"))
    assert final == [(s.start, s.end, s.text) for s in whole.segments]


def _state(pid: int) -> str:
    """A process's state letter (R, S, T stopped, Z a zombie), or "" once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return ""


_WAITING = "import time\nwhile True: time.sleep(0.01)"
"""A child that waits, for the final pass's place."""

_HELD_WHEN_THE_BOX_DIES = f"""
import os, signal, subprocess, sys
from device import ready
child = subprocess.Popen([sys.executable, "-c", {_WAITING!r}],
                         preexec_fn=ready.final_pass_process())
print(child.pid, os.sched_getscheduler(child.pid) == os.SCHED_IDLE, flush=True)
with ready.held_still(child):
    sys.stdin.readline()  # the test has seen it held still
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.slow
def test_the_final_pass_can_be_held_still_and_dies_with_the_box_even_then():
    from device import ready

    child = subprocess.Popen([sys.executable, "-c", _WAITING],
                             preexec_fn=ready.final_pass_process())
    try:
        with ready.held_still(child):
            wait_until(lambda: _state(child.pid) == "T", 5, "the final pass held still")
            time.sleep(0.2)
            assert _state(child.pid) == "T"
        wait_until(lambda: _state(child.pid) in ("S", "R"), 5, "the final pass going on")
        with ready.held_still(None):  # no final pass: nothing to hold
            pass
    finally:
        child.kill()
        child.wait(5)
    with ready.held_still(child):  # it ended: nothing to hold, and no error
        pass
    # the box dies (kill -9) while the final pass is held still: it dies too, though a
    # process held still acts on no signal but SIGKILL
    box = subprocess.Popen([sys.executable, "-c", _HELD_WHEN_THE_BOX_DIES], cwd=PROJECT_ROOT,
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        pid, idle = box.stdout.readline().split()
        assert idle == "True"  # at idle priority
        wait_until(lambda: _state(int(pid)) == "T", 5, "the final pass held still")
        box.stdin.write("\n")
        box.stdin.flush()
        assert box.wait(10) == -signal.SIGKILL
        wait_until(lambda: _state(int(pid)) in ("", "Z"), 10, "the final pass dead with the box")
    finally:
        box.kill()
        box.wait(5)
