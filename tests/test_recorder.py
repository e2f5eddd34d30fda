"""Recording: crash-safe segment storage, capture through PortAudio, kill -9 and power cuts,
disk full, a vanished microphone, controls, and the live transcript."""

from __future__ import annotations

import json
import os
import platform
import random
import resource
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from device import audio, storage
from device.capture import CaptureError, FileSource
from device.databases import open_store
from device.recorder import Recorder, RecorderBusy, capture_dir, recover_interrupted
from device.settings import PROJECT_ROOT

SR = audio.SAMPLE_RATE


def _pcm_exact(samples: np.ndarray) -> np.ndarray:
    """Samples as 16-bit integers: what a WAV on disk can hold."""
    return np.clip(np.round(samples * 32768), -32768, 32767).astype(np.int16)


def _stored(settings, recording) -> np.ndarray:
    return _pcm_exact(audio.decode(settings.audio_dir / recording.audio_file))


def _speech16(tmp_path: Path, seconds: float = 0) -> tuple[Path, np.ndarray]:
    """A 16 kHz 16-bit WAV of real speech (so 'sample-exact' is well defined)."""
    from tests.conftest import long_speech, shared_clips

    if seconds:
        path = long_speech(tmp_path, seconds)
    else:
        clip = next((c.path for c in shared_clips() if c.path.name == "zh_hours.wav"), None)
        path = clip or long_speech(tmp_path, 6)
    return path, _pcm_exact(audio.decode(path))


# -- storage ---------------------------------------------------------------------------


def test_segments_join_sample_exact_and_repair_is_idempotent(tmp_path):
    rng = np.random.default_rng(1)
    samples = rng.uniform(-0.5, 0.5, SR * 23).astype(np.float32)
    writer = storage.SegmentWriter(tmp_path / "cap", segment_seconds=10)
    for start in range(0, samples.size, 1600):
        writer.write(samples[start : start + 1600])
    writer.close()
    assert len(storage.segment_files(tmp_path / "cap")) == 3
    assert storage.repair(tmp_path / "cap") == samples.size
    assert storage.repair(tmp_path / "cap") == samples.size
    total = storage.join(tmp_path / "cap", tmp_path / "joined.wav")
    assert total == samples.size
    assert np.array_equal(_pcm_exact(audio.decode(tmp_path / "joined.wav")), _pcm_exact(samples))


def test_repair_rebuilds_headers_after_a_crash_and_cuts_only_a_torn_sample(tmp_path):
    writer = storage.SegmentWriter(tmp_path / "cap")
    writer.write(np.full(SR, 0.25, dtype=np.float32))  # no close(): the header says 0 bytes
    [segment] = storage.segment_files(tmp_path / "cap")
    with open(segment, "ab") as f:
        f.write(b"\x01")  # half a sample
    assert storage.repair(tmp_path / "cap") == SR
    assert audio.decode(segment).size == SR


# -- the real capture path (PortAudio/ALSA) ---------------------------------------------


def test_microphone_capture_through_portaudio_is_sample_exact(tmp_path, settings):
    """An ALSA 'file' PCM plays a raw file as a microphone; sounddevice records it."""
    _, expected = _speech16(tmp_path)
    (tmp_path / "input.raw").write_bytes(expected.astype("<i2").tobytes())
    (tmp_path / ".asoundrc").write_text(textwrap.dedent(f"""\
        pcm.vmic {{
          type file
          slave.pcm "null"
          file "/dev/null"
          infile "{tmp_path / 'input.raw'}"
          format "raw"
          hint {{ show on description "virtual microphone from a file" }}
        }}
        """))
    script = textwrap.dedent(f"""
        import sys, numpy as np
        from device.capture import MicrophoneSource
        from device.recorder import Recorder
        from device.settings import Settings

        class Exactly:
            # the ALSA file device does not stop at the end of its file: take what it holds
            def __init__(self, source, samples):
                self.source, self.left, self.name = source, samples, source.name
            def frames(self):
                for block in self.source.frames():
                    if self.left <= 0:
                        return
                    yield block[: self.left]
                    self.left -= block.size
            def close(self):
                self.source.close()

        settings = Settings.load()
        mic = MicrophoneSource("vmic")
        recorder = Recorder(settings)
        recorder.start(Exactly(mic, {expected.size}), title="vmic")
        recording = recorder.wait(60)
        print(recording.id, recording.status)
        """)
    env = {**os.environ, "HOME": str(tmp_path), "TINGJI_DATA_DIR": str(settings.data_dir)}
    result = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    if "No input device matching" in result.stderr or "PortAudio" in result.stderr and \
            "library not found" in result.stderr:
        pytest.skip(f"PortAudio/ALSA not available here: {result.stderr.strip()[-200:]}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "queued"]
    with open_store(settings) as store:
        recording = store.get_recording(1)
    assert np.array_equal(_stored(settings, recording), expected)


def test_a_missing_microphone_is_a_clear_error_and_records_nothing(settings):
    env = {**os.environ, "TINGJI_DATA_DIR": str(settings.data_dir)}
    result = subprocess.run(
        [sys.executable, "-m", "device", "record", "--source", "mic", "--device", "no-such-mic",
         "--no-live"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: no input device")
    assert not (settings.data_dir / "capture").exists()


# -- controls, failures ------------------------------------------------------------------


class _Vanishing:
    """A microphone unplugged mid-recording (no test machine can unplug one for real)."""

    def __init__(self, samples: np.ndarray, after: int):
        self.samples, self.after, self.name = samples, after, "mic:usb"

    def frames(self):
        for start in range(0, self.samples.size, 1600):
            if start >= self.after:
                raise CaptureError("input mic:usb stopped (device gone?)")
            yield self.samples[start : start + 1600]

    def close(self):
        pass


def test_a_vanished_microphone_stops_cleanly_and_keeps_the_audio(settings, tmp_path):
    path, expected = _speech16(tmp_path)
    recorder = Recorder(settings)
    recorder.start(_Vanishing(audio.decode(path), after=3 * SR))
    recording = recorder.wait(30)
    assert recorder.status()["seconds"] == 0.0  # idle: not the last recording's time
    assert "device gone" in recorder.stop_reason and "device gone" in recording.error
    assert recording.status == "queued"
    assert np.array_equal(_stored(settings, recording), expected[: 3 * SR])


def test_one_recording_at_a_time_pause_and_markers(settings, tmp_path):
    path, expected = _speech16(tmp_path)
    recorder = Recorder(settings)
    recording = recorder.start(FileSource(path, speed=2.0), title="Meeting")
    with pytest.raises(RecorderBusy):
        recorder.start(FileSource(path))
    with pytest.raises(RecorderBusy):  # another process (or app) on the same data dir
        Recorder(settings).start(FileSource(path))
    deadline = time.monotonic() + 10
    while recorder.status()["seconds"] < 1.0 and time.monotonic() < deadline:
        time.sleep(0.02)
    marker = recorder.marker("budget figure")
    recorder.pause()
    assert recorder.status()["state"] == "paused"
    time.sleep(0.5)
    recorder.resume()
    recording = recorder.wait(30)
    assert recorder.status()["seconds"] == 0.0  # idle: not the last recording's time
    stored = _stored(settings, recording)
    assert 0 < stored.size < expected.size  # the paused stretch was not recorded
    with open_store(settings) as store:
        [saved] = store.markers(recording.id)
    assert saved.note == "budget figure" and saved.t == marker.t >= 1.0


def test_audio_sent_by_another_device_is_recorded_once_in_order_whatever_is_resent(
        settings, tmp_path):
    from device.capture import ChunkGap, PushSource

    _, expected = _speech16(tmp_path)
    pcm = (np.clip(expected, -1, 1) * 32767).astype("<i2")
    chunks = [pcm[i:i + 4000].tobytes() for i in range(0, 4 * SR, 4000)]  # 4 s
    source = PushSource()
    recorder = Recorder(settings)
    recording = recorder.start(source, title="phone")
    assert recorder.source is source
    for seq, chunk in enumerate(chunks[:6]):
        assert source.push(seq, chunk) == seq + 1
    assert source.push(3, chunks[3]) == 6  # its answer was lost: sent again, taken once
    with pytest.raises(ChunkGap) as gap:  # chunk 6 lost on the way: the box asks for it
        source.push(7, chunks[7])
    assert gap.value.expected == 6
    for seq in range(6, len(chunks)):
        source.push(seq, chunks[seq])
    with pytest.raises(CaptureError, match="16-bit PCM"):
        source.push(len(chunks), b"odd")
    deadline = time.monotonic() + 10
    while recorder.status()["seconds"] < 4.0 and time.monotonic() < deadline:
        time.sleep(0.02)
    recording = recorder.stop()
    with pytest.raises(CaptureError, match="stopped"):
        source.push(len(chunks), chunks[0])
    stored = _stored(settings, recording)
    assert np.array_equal(stored, pcm[: 4 * SR])  # every sample, once, in order


# -- kill -9 and power cuts, in real processes ------------------------------------------


def _record_process(settings, path: Path, *extra: str, preexec=None) -> subprocess.Popen:
    env = {**os.environ, "TINGJI_DATA_DIR": str(settings.data_dir)}
    return subprocess.Popen(
        [sys.executable, "-m", "device", "record", "--source", f"file:{path}", "--no-live",
         "--no-final", *extra], cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=preexec)


def _first_segment_time(settings, timeout: float = 30.0) -> float:
    """When the first block reached the disk (the source started at most a block earlier)."""
    folder = capture_dir(settings, 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if folder.is_dir() and storage.segment_files(folder):
            return time.monotonic()
        time.sleep(0.002)
    raise AssertionError("the recorder never wrote a segment")


@pytest.mark.slow
@pytest.mark.parametrize("power_cut", [False, True], ids=["kill-9", "power-cut"])
def test_a_killed_recorder_loses_almost_nothing(settings, tmp_path, power_cut):
    path, expected = _speech16(tmp_path, seconds=25)
    rng = random.Random(7 if power_cut else 3)
    losses = []
    for iteration in range(4):
        local = settings.replace(data_dir=tmp_path / f"run{iteration}")
        trace = tmp_path / f"trace{iteration}.txt"
        extra = ("--fsync-trace", str(trace)) if power_cut else ()
        recorder = _record_process(local, path, "--speakers", "2", *extra)
        started = _first_segment_time(local)
        time.sleep(rng.uniform(0.3, 12.0))
        recorder.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        recorder.wait(10)
        captured = killed - started + 0.1  # + the first block, delivered before the clock
        if power_cut:  # what was written but not fsync'd is gone
            durable: dict[str, int] = {}
            for line in trace.read_text().split("\n"):
                if line:
                    name, size = line.split()
                    durable[name] = int(size)
            for segment in storage.segment_files(capture_dir(local, 1)):
                os.truncate(segment, durable.get(segment.name, 0))
        with open_store(local) as store:
            assert store.get_recording(1).status == "recording"
        assert recover_interrupted(local) == [1]
        assert recover_interrupted(local) == []  # idempotent
        with open_store(local) as store:
            recording = store.get_recording(1)
            assert recording.status == "recovered"
            [job] = store.jobs_for(1)
            assert job.status == "queued"
            assert job.params["speakers"] == 2  # as said before recording, after the crash
        stored = _stored(local, recording)
        assert np.array_equal(stored, expected[: stored.size])  # a clean prefix, no gaps
        losses.append(captured - stored.size / SR)
    limit = 1.0 if power_cut else 0.25
    print(f"audio lost per {'power cut' if power_cut else 'kill -9'}: "
          + ", ".join(f"{loss * 1000:.0f} ms" for loss in losses))
    assert max(losses) <= limit, losses


@pytest.mark.slow
def test_a_full_disk_stops_the_recording_cleanly_and_keeps_everything(settings, tmp_path):
    path, expected = _speech16(tmp_path, seconds=25)
    limit = 200_000  # bytes per file: a segment hits it after ~6 s

    def small_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    open_store(settings).close()
    recorder = _record_process(settings, path, "--speed", "0", preexec=small_disk)
    _, err = recorder.communicate(timeout=120)
    assert recorder.returncode == 1
    assert "recording stopped: no space left" in err.decode()
    recover_interrupted(settings)  # joins what the full disk did not let it join
    with open_store(settings) as store:
        recording = store.get_recording(1)
    assert recording.status in ("queued", "recovered") and "no space left" in recording.error
    stored = _stored(settings, recording)
    assert stored.size >= (limit - 44) // 2 - 1600
    assert np.array_equal(stored, expected[: stored.size])


# -- live transcript ---------------------------------------------------------------------


@pytest.mark.slow
def test_recording_a_real_clip_gives_exact_audio_a_live_and_a_final_transcript(
        settings, engines, tmp_path):
    from tests.conftest import shared_clips

    path, expected = _speech16(tmp_path)
    mandarin = any(c.path == path for c in shared_clips())  # else espeak English
    profile, word = ("mandarin", "开放时间") if mandarin else ("english", "committee")
    events = []
    recorder = Recorder(settings, engines)
    subscription = recorder.subscribe()
    recorder.start(FileSource(path, speed=4.0), profile=profile)
    recording = recorder.wait(60)
    while not subscription.empty():
        events.append(subscription.get_nowait())
    assert np.array_equal(_stored(settings, recording), expected)
    live = [e for e in events if e["type"] == "segment"]
    assert live and word in "".join(e["text"] for e in live).lower()
    assert any(e["type"] == "level" and e["peak_db"] > -30 for e in events)
    from device.jobs import Runner

    runner = Runner(settings, engines)
    with open_store(settings) as store:
        [job] = store.jobs_for(recording.id)
        assert runner.run(store, runner.claim(store, job.id))
        final = store.segments(recording.id)
    assert word in "".join(s.text for s in final).lower()
    assert not capture_dir(settings, recording.id).exists()
    threading.enumerate()  # the recorder leaves no capture thread behind
    assert not any(t.name == "capture" and t.is_alive() for t in threading.enumerate())


@pytest.mark.slow
def test_the_live_transcript_in_auto_mode_spends_no_encoder_pass_on_a_language_to_start(
        settings, engines, tmp_path, monkeypatch):
    from faster_whisper import WhisperModel

    from device.live import LiveTranscriber
    from device.pipeline import recognition_options, select_profile
    from device.profiles import NO_TERMS
    from tests.conftest import long_speech

    samples = audio.decode(long_speech(tmp_path, 30.0))
    detect = WhisperModel.detect_language
    detections = []
    monkeypatch.setattr(WhisperModel, "detect_language",
                        lambda self, *a, **k: detections.append(1) or detect(self, *a, **k))
    auto = select_profile(settings, "auto")
    live = []
    transcriber = LiveTranscriber(engines.detector, engines.recognizer(auto.model),
                                  recognition_options(auto, NO_TERMS, settings, auto=True),
                                  live.append)
    for block in np.array_split(samples, samples.size // 1600):
        transcriber.feed(block)
    transcriber.finish()
    assert not transcriber.errors
    assert len({s.speech_end for s in live}) >= 3 and all(s.segment.language for s in live)
    # Every utterance gets the language Whisper detects in it (one decoder step); none, not
    # even the first with no language before it, is encoded again to find one to start from.
    assert detections == []


@pytest.mark.slow
def test_the_live_transcript_shows_a_long_utterance_phrase_by_phrase(settings, engines,
                                                                      tmp_path):
    from device.live import SHORT_PAUSE_MS, SPLIT_AFTER_SECONDS, LiveTranscriber
    from device.recognize import RecognitionOptions
    from tests.conftest import espeak

    # Sentences said one after another with only a breath between them (300 ms: shorter
    # than the pause that ends an utterance, longer than the short one), ~15 s in all.
    sentences = {"committee": "The committee will meet again next Tuesday.",
                 "budget": "Everyone should read the budget before then.",
                 "river": "The bridge over the river is closed for repairs.",
                 "library": "The library opens at nine in the morning.",
                 "garden": "Please water the garden while we are away."}
    breath = np.zeros(int(0.3 * SR), dtype=np.float32)
    pieces, gaps = [], []
    for i, sentence in enumerate(sentences.values()):
        said = audio.decode(espeak(sentence, tmp_path / f"{i}.wav"))
        loud = np.flatnonzero(np.abs(said) > 0.01)
        pieces += [said[loud[0] : loud[-1] + 1], breath]
        gaps.append(sum(p.size for p in pieces[:-1]) / SR)
    samples = np.concatenate([*pieces, np.zeros(SR, dtype=np.float32)])
    assert SHORT_PAUSE_MS < 300 < engines.detector.options.min_silence_ms
    assert [c.end_s - c.start_s > 12 for c in engines.detector.speech_chunks(samples)] == [True]

    live = []
    transcriber = LiveTranscriber(engines.detector, engines.recognizer(settings.asr_model),
                                  RecognitionOptions(language="en"), live.append)
    for block in np.array_split(samples, samples.size // 1600):
        transcriber.feed(block)
    transcriber.finish()
    assert not transcriber.errors
    ends = sorted({s.speech_end for s in live})
    # Shown phrase by phrase, each part cut at a breath after the time allowed, not when
    # the speaker stops (the last breath); and nothing lost at the cuts.
    assert len(ends) >= 2 and ends[0] >= SPLIT_AFTER_SECONDS - 0.3
    for end in ends[:-1]:
        assert min(abs(end - gap) for gap in gaps[:-1]) < 0.1, (end, gaps)
    heard = " ".join(s.segment.text for s in live).lower()
    assert [word for word in sentences if word not in heard] == []


class _Tone:
    """A 440 Hz tone, delivered as fast as it can be written."""

    name = "tone"

    def __init__(self, seconds: float):
        self.blocks = int(seconds * 10)
        t = np.arange(1600) / SR
        self.block = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)

    def frames(self):
        for _ in range(self.blocks):
            yield self.block

    def close(self):
        pass


@pytest.mark.slow
def test_an_eight_hour_recording_does_not_grow_memory(settings):
    import psutil

    me = psutil.Process()
    recorder = Recorder(settings)
    before = me.memory_info().rss
    recorder.start(_Tone(8 * 3600))
    peak = before
    while recorder.capturing:
        peak = max(peak, me.memory_info().rss)
        time.sleep(0.05)
    recording = recorder.wait()
    assert recording.duration == pytest.approx(8 * 3600, abs=0.01)
    assert len(storage.segment_files(capture_dir(settings, 1))) == 0  # joined and removed
    assert (peak - before) / 1e6 < 40, f"memory grew by {(peak - before) / 1e6:.0f} MB"


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc settings")
def test_memory_the_live_transcript_frees_is_reused_while_it_runs_and_handed_back_after():
    # In a process of its own: in this one, blocks other tests freed may serve the next
    # allocation and stay, whatever is kept.
    block = 64 << 20  # above the size glibc otherwise maps apart and unmaps at once
    script = textwrap.dedent("""\
        import json, resource, sys
        from pathlib import Path
        import numpy as np
        from device.libc import keeping_freed_memory, release_freed_memory

        BLOCK = int(sys.argv[1])

        def resident():
            return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()

        def left_resident():  # bytes still resident after a block was filled and freed
            before = resident()
            block = np.ones(BLOCK // 8)
            del block
            return resident() - before

        seen = {"at first": left_resident()}
        with keeping_freed_memory():
            seen["kept"] = left_resident()
            release_freed_memory()  # a batch's trim: not while kept
            seen["again"] = left_resident()
            kept = resident()
        seen["handed back"] = kept - resident()
        seen["after"] = left_resident()
        print(json.dumps(seen))
        """)
    done = subprocess.run([sys.executable, "-c", script, str(block)], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["at first"] < block / 4  # handed back at once
    assert seen["kept"] > block * 3 / 4
    assert seen["again"] < block / 4  # the same pages again, none added
    assert seen["handed back"] > block * 3 / 4  # at the end
    assert seen["after"] < block / 4, seen


def test_a_48_khz_card_is_resampled_to_16_khz():
    import av

    from device.capture import _resample

    resampler = av.AudioResampler(format="flt", layout="mono", rate=SR)
    t = np.arange(48000) / 48000
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    out = np.concatenate([_resample(resampler, tone[i : i + 4800], 48000)
                          for i in range(0, tone.size, 4800)])
    assert abs(out.size - SR) <= 64
    spectrum = np.abs(np.fft.rfft(out[:8000]))
    assert abs(np.argmax(spectrum) * SR / 8000 - 1000) <= 4
