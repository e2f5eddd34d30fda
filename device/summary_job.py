"""The summary job: a verified model loaded for it and freed after it, the transcript
planned (whole, or chunks read into notes, by a second model when one is set), the summary
written (``device.summarize``) and stored."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import asdict

from device.records import Segment
from device.summarize import PROMPT_VERSION, LlamaSummarizer, Summary, notes_budget
from device.summary_text import NotesMemo, NothingToSummarise, Plan, StoredNotes


def load_summarizer(settings, model_id: str | None = None,
                    context: int | None = None, lazy: bool = False) -> LlamaSummarizer:
    """Verify (sha256) and load a summariser model; never from the network."""
    from device.settings import hardware_profile
    from models.store import ModelError, get_spec, load_manifest, verify

    model_id = model_id or settings.summary_model
    spec = get_spec(model_id, load_manifest(models_dir=settings.models_dir))
    if spec.kind != "llm":
        raise ModelError(f"model {model_id} is a {spec.kind} model, not a summariser")
    directory = verify(spec, settings.models_dir)
    gguf = next(directory.glob("*.gguf"), None)
    if gguf is None:
        raise ModelError(f"model {model_id} has no .gguf file: run "
                         f"`python -m models install {model_id} --force`")
    return LlamaSummarizer(gguf, model_id, hardware_profile(settings).cpu_threads,
                           context or settings.llm_context, lazy,
                           notes_budget(settings.llm_context))


def summarize(
    settings, segments: Sequence[Segment], language: str | None, model_id: str,
    notes_model_id: str | None = None,
    on_progress: Callable[..., None] = lambda p, stage=None: None, extract: bool | None = None,
    memo: NotesMemo | None = None, noted: Sequence[Sequence[tuple[float, float]]] = (),
) -> Summary:
    """Summarise with ``model_id``; a long transcript is read into notes by
    ``notes_model_id`` when given (notes ``memo`` keeps are not taken again; ``noted``: see
    ``Plan.of``).  One model is loaded at a time and freed after use."""
    extract = settings.summary_extract if extract is None else extract
    reader = notes_model_id or model_id
    plan = Plan.of(segments, language, on_progress, extract, noted,
                   None if memo is None
                   else lambda chunk: memo.get(chunk.key(reader, PROMPT_VERSION, extract)),
                   settings.summary_chunk_chars)
    reader_id = notes_model_id if plan.long and notes_model_id != model_id else None
    notes = None
    if reader_id is not None:
        with closing(load_summarizer(settings, reader_id, lazy=memo is not None)) as reader:
            notes = reader.take_notes(plan, memo)
    with closing(load_summarizer(settings, model_id)) as writer:
        if plan.long and notes is None:
            notes = writer.take_notes(plan, memo)
        ahead = memo.read_ahead(model_id) if plan.tail and memo is not None else None
        return writer.write(plan, notes, reader_id, ahead)


def summarize_recording(store, settings, job, on_progress: Callable[..., None]) -> Summary:
    """The body of a "summarize" job: the LLM is loaded for the job and freed after it, so
    it never shares memory with a transcription (the worker runs one job at a time)."""
    recording = store.get_recording(job.recording_id)
    segments = store.segments(job.recording_id, with_words=False)
    if not any(s.text.strip() for s in segments):
        raise NothingToSummarise(f"nothing to summarise: recording {recording.id} has no "
                                 "transcript yet")
    transcript_hash = store.transcript_hash(recording.id)
    model_id = job.params.get("model") or settings.summary_model
    notes_model_id = job.params.get("notes_model", settings.summary_notes_model) or None
    summary = summarize(settings, segments, recording.language, model_id,
                        notes_model_id, on_progress, memo=StoredNotes(store, recording.id),
                        noted=store.noted_chunks(recording.id))
    content = {k: v for k, v in summary.as_dict().items() if k not in ("flags",)}
    store.forget_summary_ahead(recording.id)  # read: its megabytes are not kept
    return store.add_summary(recording.id, content, [asdict(f) for f in summary.flags],
                             model_id=summary.model_id, prompt_version=summary.prompt_version,
                             transcript_hash=transcript_hash)
