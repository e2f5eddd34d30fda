"""Import audio into the library and transcribe a recording: decode -> VAD -> ASR -> store."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from device import audio
from device.errors import AudioError, DiskFullError
from device.recognize import RecognitionOptions, Recognizer
from device.records import Job, Recording, Segment
from device.settings import Settings
from device.store import Store
from device.vad import SpeechDetector


def import_audio(
    store: Store, settings: Settings, path: Path, *, title: str | None = None,
    language: str = "auto",
) -> tuple[Recording, Job]:
    """Copy a file into the library as a new recording with a queued transcription job.

    A file that is missing, empty or over the size limit still gets a recording and a job,
    both marked failed with the reason, and the error is raised for the caller to report.
    """
    path = Path(path)
    recording = store.create_recording(title or path.stem, source_name=path.name)
    job = store.enqueue("transcribe", recording.id, {"language": language})
    try:
        audio.check_size(path, settings.max_upload_bytes)
        settings.audio_dir.mkdir(parents=True, exist_ok=True)
        name = audio.stored_name(recording.id, path)
        audio.copy_durably(path, settings.audio_dir / name)
    except (AudioError, DiskFullError) as exc:
        store.fail_job(job.id, str(exc))
        raise
    recording = store.update_recording(recording.id, audio_file=name)
    return recording, job


@dataclass
class Engines:
    """The models a worker loads once and reuses for every job."""

    detector: SpeechDetector
    recognizer: Recognizer


def transcribe_recording(
    store: Store,
    settings: Settings,
    engines: Engines,
    job: Job,
    on_progress: Callable[[float], None] = lambda percent: None,
) -> list[Segment]:
    """Run one claimed transcription job to completion; the transcript is stored atomically.

    AudioError propagates (the caller marks the job failed); nothing is written before the
    final transaction, so an interrupted run leaves no partial transcript.
    """
    recording = store.get_recording(job.recording_id)
    if recording.audio_file is None:
        raise AudioError(recording.source_name, "the recording has no stored audio")
    try:
        samples = audio.decode(
            settings.audio_dir / recording.audio_file, settings.max_audio_seconds
        )
    except AudioError as exc:  # name the user's file, not our stored copy
        raise type(exc)(recording.source_name, exc.reason) from exc
    duration = samples.size / audio.SAMPLE_RATE
    store.update_recording(recording.id, status="transcribing", duration=duration)
    speech = engines.detector.speech_chunks(samples)
    on_progress(5.0)
    language = job.params.get("language", settings.language)
    options = RecognitionOptions(
        language=None if language in (None, "", "auto") else language,
        batch_size=settings.batch_size,
    )
    segments: list[Segment] = []
    furthest = 0.0
    for segment in engines.recognizer.transcribe(samples, speech, options):
        segments.append(segment)
        furthest = max(furthest, segment.end)
        on_progress(5.0 + 94.0 * min(furthest / max(duration, 1e-6), 1.0))
    segments.sort(key=lambda s: (s.start, s.end))
    detected = _majority_language(segments) or options.language
    store.complete_transcription(
        job.id, recording.id, segments,
        language=detected,
        language_probability=None if options.language else _share(segments, detected),
        duration=duration,
        model_id=engines.recognizer.model_id,
    )
    return segments


def _majority_language(segments: list[Segment]) -> str | None:
    totals: dict[str, float] = {}
    for s in segments:
        if s.language:
            totals[s.language] = totals.get(s.language, 0.0) + (s.end - s.start)
    return max(totals, key=totals.get) if totals else None


def _share(segments: list[Segment], language: str | None) -> float | None:
    total = sum(s.end - s.start for s in segments)
    if not total or language is None:
        return None
    return round(sum(s.end - s.start for s in segments if s.language == language) / total, 3)
