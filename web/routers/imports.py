"""Import: upload an audio file → a recording with a transcription job.

PUT /api/upload?filename=NAME[&title=…&profile=…]   raw file body (the page streams it)
  413 over the size cap (checked on Content-Length and while streaming), 415 when the
  content is not an audio container, 400 for a bad profile; else {recording_id, job_id}.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request

from device import audio
from device.errors import AudioError, DiskFullError
from device.pipeline import import_audio
from device.profiles import ProfileError, load_profiles
from web.deps import Interviewer, SettingsDep, StoreDep, templates

router = APIRouter()
SNIFF_BYTES = 16


@router.get("/upload")
def upload_page(request: Request, user: Interviewer, settings: SettingsDep):
    return templates(request).TemplateResponse(request, "upload.html", {
        "profiles": sorted(load_profiles(settings.data_dir)),
        "max_bytes": settings.max_upload_bytes})


async def _receive(request: Request, folder: Path, limit: int) -> Path:
    """Stream the body to a temporary file named by its sniffed type; nothing is left
    behind when it is too large, not audio, or the disk fills."""
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f"upload-{secrets.token_hex(8)}.part"
    size, head, suffix = 0, b"", None
    try:
        with open(temporary, "wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise HTTPException(413, f"the file is larger than the "
                                             f"{limit / 1e9:.1f} GB upload limit")
                if suffix is None:
                    head += chunk[: SNIFF_BYTES - len(head)]
                    if len(head) >= SNIFF_BYTES:
                        suffix = _audio_suffix(head)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if size == 0:
            raise HTTPException(400, "the file is empty")
        suffix = suffix or _audio_suffix(head)
        path = temporary.with_suffix(suffix)
        os.replace(temporary, path)
        return path
    except OSError as exc:
        if exc.errno in (28, 27):
            raise HTTPException(507, "the disk is full: nothing was stored") from exc
        raise
    finally:
        temporary.unlink(missing_ok=True)


def _audio_suffix(head: bytes) -> str:
    suffix = audio.sniff_container(head)
    if suffix is None:
        raise HTTPException(415, "this is not an audio file tingji can read (WAV, FLAC, MP3, "
                                 "M4A/AAC, OGG/Opus, WebM)")
    return suffix


@router.put("/api/upload")
async def upload(request: Request, user: Interviewer, store: StoreDep, settings: SettingsDep,
                 filename: str = "upload", title: str | None = None,
                 profile: str | None = None):
    limit = settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"the file is larger than the {limit / 1e9:.1f} GB limit")
    path = await _receive(request, settings.data_dir / "uploads", limit)
    try:
        name = Path(filename).name or "upload"
        recording, job = import_audio(store, settings, path, title=title or Path(name).stem,
                                      profile=profile or None, owner_id=user.id)
        store.update_recording(recording.id, source_name=name)
    except ProfileError as exc:
        raise HTTPException(400, str(exc)) from exc
    except (AudioError, DiskFullError) as exc:
        raise HTTPException(507 if isinstance(exc, DiskFullError) else 400, str(exc)) from exc
    finally:
        path.unlink(missing_ok=True)
    return {"recording_id": recording.id, "job_id": job.id}
