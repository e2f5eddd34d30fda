"""One recording: the page (player + transcript + summary), its audio with range requests,
the transcript as JSON, editing with revisions, exports and summaries.

Edits name the segment revision they were made on; a stale one answers 409 with the stored
segment, so no edit is silently lost.
"""

from __future__ import annotations

import functools
import re
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from markupsafe import Markup
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from device import audio, encryption, export
from device.errors import N_, EditConflict
from device.grounding import grounding_flags
from device.jobs import is_draft
from device.pipeline import delete_recording
from device.records import Recording, User
from device.store.editing import SEGMENT_MAX_CHARS
from device.summary_schema import check_summary_content
from web import timeline
from web.deps import (
    ROW_ID_MAX,
    Forbidden,
    Interviewer,
    Refused,
    Reviewer,
    RowId,
    SettingsDep,
    StoreDep,
    templates,
    visible_recording,
)
from web.i18n import say, told_fields

router = APIRouter()
AUDIO_TYPES = {".wav": "audio/wav", ".mp3": "audio/mpeg", ".m4a": "audio/mp4",
               ".aac": "audio/aac", ".flac": "audio/flac", ".ogg": "audio/ogg",
               ".opus": "audio/ogg", ".webm": "audio/webm", ".mp4": "audio/mp4"}


@router.get("/recordings/{recording_id}")
async def recording_page(request: Request, recording_id: RowId, user: Interviewer,
                         store: StoreDep,
                         t: Annotated[float | None, Query(ge=0, le=1e7)] = None,
                         segment: Annotated[int | None, Query(ge=1, le=ROW_ID_MAX)] = None,
                         q: Annotated[str, Query(max_length=200)] = ""):
    """``segment`` opens the page at that segment's own start (a search hit); ``t`` at a
    time; ``q`` marks where the text searched for is on the timeline.  Drawn on the event
    loop (a thread hop costs more than a short page; its reads wait for no writer), a
    long recording's page in a thread, so the loop never stalls for long."""
    recording = visible_recording(store, user, recording_id)
    page = functools.partial(_recording_page, request, recording, user, store, t, segment, q)
    if (recording.duration or 0) > INLINE_SECONDS:
        return await run_in_threadpool(page)
    return page()


INLINE_SECONDS = 1800
"""Pages of recordings up to this long are drawn on the event loop (~10 ms for 30 min)."""


def _recording_page(request: Request, recording: Recording, user: User, store,
                    t: float | None, segment: int | None, q: str):
    recording_id = recording.id
    segments = store.segments(recording_id, with_words=False)
    start = next((s.start for s in segments if s.id == segment), t)
    summaries = store.summaries(recording_id)
    jobs = store.jobs_for(recording_id)
    summary = summaries[-1] if summaries else None
    markers = store.markers(recording_id)
    tried = [j for j in jobs if j.kind == "summarize" and j.status == "failed"
             and (summary is None or (j.finished or "") > summary.created)]
    return templates(request).TemplateResponse(request, "recording.html", {
        "recording": recording, "segments": segments, "summary": summary,
        "summary_failure": tried[-1].error if tried else None,
        "summary_job": next((j for j in jobs if j.kind == "summarize"
                             and j.status in ("queued", "running")), None),
        "cite": lambda ids: export.citations(ids, segments),
        "summary_versions": len(summaries), "can_edit": user.can("reviewer"),
        "can_delete": _may_delete(user, recording),
        "jobs": jobs, "markers": markers, "draft": is_draft(jobs),
        "strip": timeline.strip(recording.duration, segments, markers, q),
        "start_at": start, "formats": list(export.FORMATS),
        "transcript_hash": store.transcript_hash(recording_id),
        # "<" escaped (valid JSON): no "</script>" or "<!--" can occur in the script element
        "words_json": Markup(store.words_json(recording_id).replace("<", "\\u003c")),
        "speakers": sorted({s.speaker for s in segments if s.speaker}),
        "talk_time": _talk_time(segments),
    })


def _talk_time(segments) -> list[tuple[str, float, int]]:
    """(speaker, seconds, colour index) of each speaker, in order of first appearance."""
    seconds: dict[str, float] = {}
    for s in segments:
        if s.speaker:
            seconds[s.speaker] = seconds.get(s.speaker, 0.0) + max(s.end - s.start, 0.0)
    return [(name, total, n % 8) for n, (name, total) in enumerate(seconds.items())]


@router.get("/recordings/{recording_id}/audio")
def recording_audio(request: Request, recording_id: RowId, user: Interviewer,
                    store: StoreDep, settings: SettingsDep):
    recording = visible_recording(store, user, recording_id)
    if recording.audio_erased:
        raise Refused(410, N_("the retention rules erased this recording's audio"))
    if not recording.audio_file:
        raise Refused(404, N_("this recording has no audio file yet"))
    root = settings.audio_dir.resolve()
    path = (root / recording.audio_file).resolve()
    sealed = encryption.is_sealed(path.name)
    if path.parent != root or not (path.is_file() or sealed and path.is_dir()):
        raise Refused(404, N_("the audio file is missing"))  # never outside the audio folder
    if sealed:
        try:
            key = encryption.data_key(settings, recording.id)
        except encryption.BoxLocked as exc:
            raise Refused(423, exc) from exc
        return _sealed_response(request, path, key,
                                AUDIO_TYPES.get(path.with_suffix("").suffix.lower(),
                                                "application/octet-stream"))
    return FileResponse(path, media_type=AUDIO_TYPES.get(path.suffix.lower(),
                                                         "application/octet-stream"))


_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")
_STEP = 256 * 1024


def _sealed_response(request: Request, path, key: bytes, media_type: str) -> Response:
    """A sealed file's plaintext, decrypted as it is sent (never written anywhere), with
    single byte ranges (the player seeks by them)."""
    reader = audio.SealedAudio(path, key).open()
    size, start, end, status = reader.size, 0, reader.size, 200
    headers = {"accept-ranges": "bytes"}
    wanted = request.headers.get("range")
    if wanted:
        match = _RANGE.match(wanted.strip())
        first = int(match.group(1)) if match and match.group(1) else None
        last = int(match.group(2)) if match and match.group(2) else None
        if match and first is None and last is not None:  # the last N bytes
            first, last = max(size - last, 0), size - 1
        if not match or first is None or first >= size or (last is not None and last < first):
            reader.close()
            return Response(status_code=416, headers={"content-range": f"bytes */{size}"})
        start, end, status = first, min(last + 1 if last is not None else size, size), 206
        headers["content-range"] = f"bytes {start}-{end - 1}/{size}"
    headers["content-length"] = str(end - start)

    def body():
        try:
            for position in range(start, end, _STEP):
                yield reader.read_range(position, min(position + _STEP, end))
        finally:
            reader.close()

    return StreamingResponse(body(), status_code=status, media_type=media_type,
                             headers=headers)


@router.get("/api/recordings/{recording_id}")
def recording_json(request: Request, recording_id: RowId, user: Interviewer,
                   store: StoreDep):
    recording = visible_recording(store, user, recording_id)
    return {"recording": told_fields(request, asdict(recording), "error"),
            "segments": [export.segment_record(s) for s in store.segments(recording_id)],
            "jobs": [told_fields(request, asdict(j), "stage", "error")
                     for j in store.jobs_for(recording_id)],
            "summary": _as_dict(store.latest_summary(recording_id))}


def _as_dict(record) -> dict | None:
    return asdict(record) if record is not None else None


class TitleChange(BaseModel):
    title: str = Field(min_length=1, max_length=800)


@router.post("/api/recordings/{recording_id}/title")
def rename_recording(recording_id: RowId, body: TitleChange, user: Interviewer,
                     store: StoreDep):
    """Reviewers rename any recording, an interviewer their own."""
    visible_recording(store, user, recording_id)
    return asdict(store.update_recording(recording_id, title=body.title.strip()))


def _may_delete(user: User, recording: Recording) -> bool:
    return recording.owner_id == user.id or user.can("admin")


@router.post("/api/recordings/{recording_id}/delete")
def delete(recording_id: RowId, user: Interviewer, store: StoreDep, settings: SettingsDep):
    """The owner deletes their own recording, an admin any; the audio goes too, and the
    deletion stays in the admin's history (System page)."""
    recording = visible_recording(store, user, recording_id)
    if not _may_delete(user, recording):
        raise Forbidden("only the recording's owner or an admin may delete it")
    delete_recording(store, settings, recording_id, user)
    return {"deleted": recording_id}


# -- editing -------------------------------------------------------------------------------

SegmentRevision = Annotated[int, Field(ge=0, le=ROW_ID_MAX)]
"""The segment revision an edit was made on."""


class TextEdit(BaseModel):
    text: str = Field(max_length=SEGMENT_MAX_CHARS)
    revision: SegmentRevision


class SpeakerEdit(BaseModel):
    speaker: str | None = Field(default=None, max_length=100)
    revision: SegmentRevision


class Split(BaseModel):
    position: int = Field(ge=1, le=20_000)
    revision: SegmentRevision


class Merge(BaseModel):
    revision: SegmentRevision
    next_revision: SegmentRevision


class SegmentPick(BaseModel):
    id: int = Field(ge=1, le=ROW_ID_MAX)
    revision: SegmentRevision


class SpeakerAssignment(BaseModel):
    speaker: str | None = Field(default=None, max_length=400)
    """None or empty: the segments get no speaker."""
    segments: list[SegmentPick] = Field(max_length=10_000)


class SpeakerRename(BaseModel):
    old: str = Field(max_length=400)
    new: str = Field(min_length=1, max_length=400)


class Replace(BaseModel):
    find: str = Field(min_length=1, max_length=1000)
    replace: str = Field(max_length=1000)


@router.patch("/api/segments/{segment_id}")
def edit_segment(segment_id: RowId, body: TextEdit, user: Reviewer, store: StoreDep):
    store.segment_recording(segment_id)
    return export.segment_record(store.edit_segment(segment_id, body.text, body.revision, user))


class Revision(BaseModel):
    revision: SegmentRevision


@router.post("/api/segments/{segment_id}/confirm")
def confirm_segment(segment_id: RowId, body: Revision, user: Reviewer, store: StoreDep):
    """The text is right as heard: the marks of where the recogniser was unsure go."""
    store.segment_recording(segment_id)
    return export.segment_record(store.confirm_segment(segment_id, body.revision, user))


@router.post("/api/segments/{segment_id}/speaker")
def set_speaker(segment_id: RowId, body: SpeakerEdit, user: Reviewer, store: StoreDep):
    return export.segment_record(store.set_speaker(segment_id, body.speaker, body.revision, user))


@router.post("/api/segments/{segment_id}/split")
def split_segment(segment_id: RowId, body: Split, user: Reviewer, store: StoreDep):
    pair = store.split_segment(segment_id, body.position, body.revision, user)
    return {"segments": [export.segment_record(s) for s in pair]}


@router.post("/api/segments/{segment_id}/merge")
def merge_segment(segment_id: RowId, body: Merge, user: Reviewer, store: StoreDep):
    return export.segment_record(store.merge_segments(segment_id, body.revision, body.next_revision,
                                             user))


@router.post("/api/recordings/{recording_id}/speakers/assign")
def assign_speaker(recording_id: RowId, body: SpeakerAssignment, user: Reviewer,
                   store: StoreDep):
    """One speaker for the segments a reviewer picked, as one revision (undo restores
    them all); a segment changed since the page loaded answers 409 and changes none."""
    store.get_recording(recording_id)
    picks = [(p.id, p.revision) for p in body.segments]
    changed = store.assign_speaker(recording_id, picks, body.speaker, user)
    return {"segments": [export.segment_record(s) for s in changed]}


@router.post("/api/recordings/{recording_id}/speakers/rename")
def rename_speaker(recording_id: RowId, body: SpeakerRename, user: Reviewer, store: StoreDep):
    store.get_recording(recording_id)
    return {"changed": store.rename_speaker(recording_id, body.old, body.new, user)}


@router.post("/api/recordings/{recording_id}/replace")
def replace(recording_id: RowId, body: Replace, user: Reviewer, store: StoreDep):
    store.get_recording(recording_id)
    return {"changed": store.replace_text(recording_id, body.find, body.replace, user)}


@router.get("/api/recordings/{recording_id}/revisions")
def revisions(request: Request, recording_id: RowId, user: Reviewer, store: StoreDep,
              limit: Annotated[int, Query(ge=1, le=100_000)] = 200):
    store.get_recording(recording_id)
    return [told_fields(request, asdict(r), "note") for r in store.revisions(recording_id,
                                                                              limit)]


@router.post("/api/revisions/{revision_id}/undo")
def undo(revision_id: RowId, user: Reviewer, store: StoreDep):
    revision = store.undo_revision(revision_id, user)
    return {"revision": revision.id,
            "segments": [export.segment_record(s) for s in store.segments(revision.recording_id)]}


# -- exports and summaries -----------------------------------------------------------------

@router.get("/recordings/{recording_id}/export.{fmt}")
def export_transcript(request: Request, recording_id: RowId, fmt: str, user: Interviewer,
                      store: StoreDep):
    """Reviewers export every recording, an interviewer their own."""
    if fmt not in export.FORMATS:
        raise Refused(404, N_("no export format %(format)s; choose one of %(formats)s"),
                      format=fmt, formats=", ".join(export.FORMATS))
    recording = visible_recording(store, user, recording_id)
    body = export.export(fmt, recording, store.segments(recording_id),
                         store.latest_summary(recording_id),
                         say=functools.partial(say, request))
    filename = f"recording-{recording.id}.{fmt}"
    return Response(body, media_type=export.FORMATS[fmt], headers={
        "Content-Disposition": f'attachment; filename="{filename}"'})


class SummarizeRequest(BaseModel):
    model: str | None = None
    notes_model: str | None = None
    """The model that reads a long transcript into notes (default: the setting)."""


@router.post("/api/recordings/{recording_id}/summarize")
def summarize(recording_id: RowId, user: Reviewer, store: StoreDep,
              body: Annotated[SummarizeRequest | None, Body()] = None):
    recording = store.get_recording(recording_id)
    if recording.status != "done":
        raise Refused(409, N_("the transcript is not finished yet"))
    queued = [j for j in store.jobs_for(recording_id)
              if j.kind == "summarize" and j.status in ("queued", "running")]
    params = {k: v for k, v in (body.model_dump() if body else {}).items() if v}
    job = queued[0] if queued else store.enqueue("summarize", recording_id, params)
    return asdict(job)


@router.post("/api/recordings/{recording_id}/summarize/cancel")
def cancel_summary(recording_id: RowId, user: Reviewer, store: StoreDep):
    """Stop the recording's queued or running summary (a reviewer's, like starting one)."""
    store.get_recording(recording_id)
    cancelled = [j.id for j in store.jobs_for(recording_id)
                 if j.kind == "summarize" and j.status in ("queued", "running")
                 and store.cancel_job(j.id)]
    return {"cancelled": cancelled}


class DiarizeRequest(BaseModel):
    speakers: int | None = Field(default=None, ge=1, le=20)
    """How many people speak; None: counted."""
    overwrite: bool = False
    """Replace the names reviewers gave too."""


@router.post("/api/recordings/{recording_id}/diarize")
def diarize(recording_id: RowId, body: DiarizeRequest, user: Reviewer, store: StoreDep):
    """Queue finding the speakers again (text edits and reviewers' names are kept)."""
    recording = store.get_recording(recording_id)
    if recording.status != "done":
        raise Refused(409, N_("the transcript is not finished yet"))
    if any(j.kind == "diarize" and j.status in ("queued", "running")
           for j in store.jobs_for(recording_id)):
        raise Refused(409, N_("the speakers of this recording are already being found"))
    return asdict(store.enqueue("diarize", recording_id, {
        "speakers": body.speakers, "overwrite": body.overwrite, "user_id": user.id}))


class SummaryEdit(BaseModel):
    content: dict
    version: int = Field(ge=1, le=ROW_ID_MAX)
    """The version the reviewer edited; a newer one answers 409."""


@router.put("/api/recordings/{recording_id}/summary")
def edit_summary(recording_id: RowId, body: SummaryEdit, user: Reviewer, store: StoreDep):
    current = store.latest_summary(recording_id)
    if current is None:
        raise Refused(404, N_("this recording has no summary yet"))
    if current.version != body.version:
        raise EditConflict(f"the summary changed since you loaded it (version "
                           f"{current.version}, yours {body.version})")
    content = {**current.content, **{k: v for k, v in body.content.items()
                                     if k in current.content}}
    check_summary_content(content)
    flags = grounding_flags(content, store.segments(recording_id, with_words=False))
    return store.add_summary(recording_id, content, [asdict(f) for f in flags],
                             model_id=f"edited by {user.username}",
                             prompt_version=current.prompt_version,
                             transcript_hash=store.transcript_hash(recording_id))


@router.get("/api/jobs/{job_id}")
def job_status(request: Request, job_id: RowId, user: Interviewer, store: StoreDep):
    job = store.get_job(job_id)
    visible_recording(store, user, job.recording_id)
    return told_fields(request, asdict(job), "stage", "error")

