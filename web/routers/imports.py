"""Import: upload an audio file → a recording with a transcription job.

PUT /api/upload?filename=NAME[&title=…&profile=…&speakers=N&fast=true]   raw file body (the
  page streams it; ``fast``: a quick draft)
  413 over the size cap (checked on Content-Length and while streaming), 415 when the
  content is not an audio container, 400 for a bad profile; else {recording_id, job_id}.
POST /api/recordings/{id}/transcribe   transcribe a stored recording again, accurately (a
  quick draft's full transcript); the text replaced stays in the revision history.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Annotated, BinaryIO

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from device import audio, encryption
from device.databases import open_store
from device.errors import N_, AudioError, DiskFullError, TingjiError, is_disk_full
from device.pipeline import import_audio, keep_room_for_recording, requeue_recording
from device.profiles import ProfileError, load_profiles
from device.records import Job, Recording, User
from device.settings import Settings
from device.vault import SealedWriter, new_data_key
from web.deps import (
    Interviewer,
    Refused,
    RowId,
    SettingsDep,
    StoreDep,
    templates,
    visible_recording,
)

router = APIRouter()
SNIFF_BYTES = 16


@router.get("/upload")
def upload_page(request: Request, user: Interviewer, settings: SettingsDep):
    return templates(request).TemplateResponse(request, "upload.html", {
        "profiles": sorted((p.name, p.title) for p in load_profiles(settings.data_dir).values()),
        "max_bytes": settings.max_upload_bytes})


async def _receive(request: Request, folder: Path, limit: int,
                   key: bytes | None = None) -> Path:
    """Stream the body to a temporary file named by its sniffed type; nothing is left
    behind when it is too large, not audio, or the disk fills.  Every write, the fsync and
    the rename run in worker threads: the event loop serves other requests meanwhile.
    With ``key`` (an encrypted box) the file is sealed as it arrives: no plaintext of it
    reaches the disk, and its name ends in ``.sealed``."""
    temporary = folder / f"upload-{secrets.token_hex(8)}.part"
    size, head, suffix = 0, b"", None
    try:
        out = await run_in_threadpool(_open_new, temporary)
        if key is not None:
            out = SealingFile(out, key)
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise Refused(413, N_("the file is larger than the %(size)s GB upload limit"),
                                  size=f"{limit / 1e9:.1f}")
                if suffix is None:
                    head += chunk[: SNIFF_BYTES - len(head)]
                    if len(head) >= SNIFF_BYTES:
                        suffix = _audio_suffix(head)
                await run_in_threadpool(out.write, chunk)
            await run_in_threadpool(_flush_to_disk, out)
        finally:
            await run_in_threadpool(out.close)
        if size == 0:
            raise Refused(400, N_("the file is empty"))
        path = temporary.with_suffix(suffix or _audio_suffix(head))
        if key is not None:
            path = path.with_name(path.name + encryption.SUFFIX)
        await run_in_threadpool(os.replace, temporary, path)
        return path
    except OSError as exc:
        if is_disk_full(exc):
            raise Refused(507, N_("the disk is full: nothing was stored")) from exc
        raise
    finally:
        await run_in_threadpool(temporary.unlink, missing_ok=True)


def _check_room(settings: Settings, user: User, size: int) -> None:
    """Refuse an upload before receiving it when its owner already has their share of the
    queue waiting, or when it would eat into the space kept for live recording."""
    with open_store(settings) as store:
        waiting = store.pending_transcriptions(user.id)
    if not user.can("admin") and waiting >= settings.pending_imports_per_user:
        raise Refused(429, N_("%(waiting)d of your files are still waiting to be transcribed: "
                              "upload more when one is done"), waiting=waiting)
    try:
        keep_room_for_recording(settings, size, "the upload")
    except DiskFullError as exc:
        raise Refused(507, exc) from exc


def _open_new(path: Path) -> BinaryIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "wb")


def _flush_to_disk(out) -> None:
    out.flush()
    os.fsync(out.fileno())


class SealingFile:
    """A file that seals what is written to it (``device.vault.SealedWriter``); flushing
    writes the last chunk, so it is flushed once, at the end."""

    def __init__(self, out: BinaryIO, key: bytes):
        self._out = out
        self._writer = SealedWriter(out, key)

    def write(self, data: bytes) -> int:
        return self._writer.write(data)

    def flush(self) -> None:
        self._writer.close()
        self._out.flush()

    def fileno(self) -> int:
        return self._out.fileno()

    def close(self) -> None:
        self._out.close()


def _audio_suffix(head: bytes) -> str:
    suffix = audio.sniff_container(head)
    if suffix is None:
        raise Refused(415, N_("this is not an audio file tingji can read (WAV, FLAC, MP3, "
                              "M4A/AAC, OGG/Opus, WebM)"))
    return suffix


@router.put("/api/upload")
async def upload(request: Request, user: Interviewer, settings: SettingsDep,
                 filename: Annotated[str, Query(max_length=1000)] = "upload",
                 title: Annotated[str | None, Query(max_length=1000)] = None,
                 profile: Annotated[str | None, Query(max_length=100)] = None,
                 speakers: Annotated[int | None, Query(ge=1, le=20)] = None,
                 fast: bool = False):
    limit = settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise Refused(413, N_("the file is larger than the %(size)s GB upload limit"),
                      size=f"{limit / 1e9:.1f}")
    await run_in_threadpool(_check_room, settings, user, int(declared or 0))
    key = new_data_key() if encryption.enabled(settings) else None
    path = await _receive(request, settings.data_dir / "uploads", limit, key)
    name = Path(filename).name or "upload"
    # Copying a file of up to the upload limit into the audio store, durably.
    recording, job = await run_in_threadpool(
        _import, settings, path, name, title or Path(name).stem, profile or None, user.id,
        speakers, key, fast)
    return {"recording_id": recording.id, "job_id": job.id}


def _import(settings: Settings, path: Path, name: str, title: str, profile: str | None,
            owner_id: int, speakers: int | None = None, key: bytes | None = None,
            fast: bool = False) -> tuple[Recording, Job]:
    try:
        with open_store(settings) as store:
            recording, job = import_audio(store, settings, path, title=title, profile=profile,
                                          owner_id=owner_id, speakers=speakers,
                                          sealed_with=key, fast=fast)
            store.update_recording(recording.id, source_name=name)
            return recording, job
    except ProfileError as exc:
        raise Refused(400, exc) from exc
    except (AudioError, DiskFullError) as exc:
        raise Refused(507 if isinstance(exc, DiskFullError) else 400, exc) from exc
    finally:
        path.unlink(missing_ok=True)


@router.post("/api/recordings/{recording_id}/transcribe")
def retranscribe(recording_id: RowId, user: Interviewer, settings: SettingsDep,
                 store: StoreDep):
    """Transcribe a recording again, accurately: whoever sees it may (an interviewer the
    quick draft of their own import)."""
    visible_recording(store, user, recording_id)
    try:
        _, job = requeue_recording(store, settings, recording_id)
    except TingjiError as exc:  # already queued, or no audio kept
        raise Refused(409, exc) from exc
    return {"job_id": job.id}
