"""Recording over HTTP (JSON) and a Server-Sent Events stream of live segments and levels.

POST /api/record/start {title?, source?, device?, profile?}   409 if one is running
POST /api/record/pause | /resume | /stop                      409 if nothing is recording
POST /api/record/marker {note?}
POST /api/record/chunk?seq=N  (16-bit PCM)                    the page's microphone, source browser
GET  /api/record/status
GET  /api/record/events                                       text/event-stream
GET  /record                                                  the Record page
Every route needs a signed-in user (interviewer or above); writes need the CSRF token.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import threading
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from device.capture import CaptureError, ChunkGap, FileSource, MicrophoneSource, PushSource
from device.errors import N_, TingjiError
from device.profiles import load_profiles
from device.recorder import NotRecording, Recorder, RecorderBusy
from device.records import User
from device.text import NOTE_MAX, TITLE_MAX
from web.deps import Interviewer, Refused, SettingsDep, templates
from web.i18n import say, told

router = APIRouter()
_setup = threading.Lock()


class StartRequest(BaseModel):
    title: str | None = Field(default=None, max_length=4 * TITLE_MAX)
    source: str = Field(default="mic", max_length=300)
    """mic (the box's own), browser (the microphone of the device showing the page, its
    audio sent in chunks to /api/record/chunk), or demo:NAME for a file in DATA_DIR/demo/
    played at real-time speed."""
    device: str | None = Field(default=None, max_length=200)
    profile: str | None = Field(default=None, max_length=100)
    speakers: int | None = Field(default=None, ge=1, le=20)
    """How many people will speak; None: counted after the recording."""


class MarkerRequest(BaseModel):
    note: str = Field(default="", max_length=4 * NOTE_MAX)


def recorder_of(request: Request) -> Recorder:
    """The app's one recorder, created (with the models) on first use."""
    with _setup:
        if getattr(request.app.state, "recorder", None) is None:
            from device.jobs import load_engines

            settings = request.app.state.settings
            # This process only transcribes live; the final pass runs beside it while
            # recording (at idle priority), and the worker finishes it after stop.
            request.app.state.recorder = Recorder(settings, load_engines(settings, live=True),
                                                  ahead=True)
        return request.app.state.recorder


def _source(body: StartRequest, settings):
    if body.source == "mic":
        device = int(body.device) if body.device and body.device.isdigit() else body.device
        return MicrophoneSource(device)
    if body.source.startswith("demo:"):
        name = body.source[5:]
        folder = settings.data_dir / "demo"
        if not name or "/" in name or name.startswith(".") or not (folder / name).is_file():
            available = ", ".join(sorted(p.name for p in folder.glob("*"))) or "none"
            raise CaptureError(f"no demo file {name!r}; available: {available}")
        return FileSource(folder / name)
    if body.source == "browser":
        return PushSource()
    raise CaptureError(f"unknown source {body.source!r}; use mic, browser or demo:NAME")


@router.get("/record")
def record_page(request: Request, user: Interviewer, settings: SettingsDep):
    demo = settings.data_dir / "demo"
    return templates(request).TemplateResponse(request, "record.html", {
        "profiles": sorted((p.name, p.title) for p in load_profiles(settings.data_dir).values()),
        "demos": sorted(p.name for p in demo.glob("*") if p.is_file()) if demo.is_dir() else []})


@router.post("/api/record/start")
def start(body: StartRequest, request: Request, settings: SettingsDep, user: Interviewer):
    recorder = recorder_of(request)
    try:
        recording = recorder.start(_source(body, settings), title=body.title,
                                   profile=body.profile, owner_id=user.id,
                                   speakers=body.speakers)
    except RecorderBusy as exc:
        raise Refused(409, exc) from exc
    except TingjiError as exc:
        raise Refused(400, exc) from exc
    return {"recording_id": recording.id, **recorder.status()}


def _offer(inbox: asyncio.Queue, event: dict) -> None:
    with contextlib.suppress(asyncio.QueueFull):  # a slow client misses level updates
        inbox.put_nowait(event)


BUSY = N_("the box is recording for someone else")


def _foreign(recorder: Recorder, user: User) -> bool:
    """Whether the recorder's recording (in progress or just ended) is someone else's: a
    recording is its owner's (and the admins') to see and control."""
    return (recorder.owner_id is not None and recorder.owner_id != user.id
            and not user.can("admin"))


def _theirs(recorder: Recorder, user: User) -> bool:
    return recorder.state == "recording" and _foreign(recorder, user)


def _status(request: Request, recorder: Recorder, user: User) -> dict:
    if _theirs(recorder, user):
        return {"state": "busy", "message": say(request, BUSY)}
    return recorder.status()


def _control(request: Request, user: User, action: str, **kwargs):
    recorder = recorder_of(request)
    if _theirs(recorder, user):
        raise Refused(403, BUSY)
    try:
        result = getattr(recorder, action)(**kwargs)
    except NotRecording as exc:
        raise Refused(409, exc) from exc
    return result


@router.post("/api/record/pause")
def pause(request: Request, user: Interviewer):
    _control(request, user, "pause")
    return recorder_of(request).status()


@router.post("/api/record/resume")
def resume(request: Request, user: Interviewer):
    _control(request, user, "resume")
    return recorder_of(request).status()


@router.post("/api/record/marker")
def marker(body: MarkerRequest, request: Request, user: Interviewer):
    return _control(request, user, "marker", note=body.note)


@router.post("/api/record/stop")
def stop(request: Request, user: Interviewer):
    recording = _control(request, user, "stop")
    return {"recording_id": recording.id, "status": recording.status,
            "duration": recording.duration, "error": told(request, recording.error)}


@router.post("/api/record/chunk")
async def chunk(request: Request, user: Interviewer,
                seq: Annotated[int, Query(ge=0, le=10**9)]):
    """A chunk of this device's microphone (16-bit PCM, 16 kHz mono) for the recording it
    started; answers the number of the next chunk wanted (409 with it after a gap)."""
    recorder = await asyncio.to_thread(recorder_of, request)
    if _theirs(recorder, user):
        raise Refused(403, BUSY)
    source = recorder.source
    if not isinstance(source, PushSource):
        raise Refused(409, N_("no recording from this device's microphone is running"))
    pcm = await request.body()
    try:
        wanted = await asyncio.to_thread(source.push, seq, pcm)
    except ChunkGap as exc:
        return JSONResponse({"detail": say(request, exc), "next": exc.expected}, status_code=409)
    except CaptureError as exc:
        raise Refused(400, exc) from exc
    return {"next": wanted}


@router.get("/api/record/status")
def status(request: Request, user: Interviewer):
    return _status(request, recorder_of(request), user)


STREAMS_PER_USER, STREAMS_IN_ALL = 4, 32
"""Open live-event streams: a browser tab needs one; more from one user is a leak or an
attack, and each costs the box a connection."""
KEEP_ALIVE_SECONDS = 15.0


@router.get("/api/record/events")
async def events(request: Request, user: Interviewer):
    open_streams: collections.Counter = request.app.state.event_streams
    if (open_streams[user.id] >= STREAMS_PER_USER
            or sum(open_streams.values()) >= STREAMS_IN_ALL):
        raise Refused(429, N_("too many live-transcript streams are open: close other tabs or "
                              "windows of the Record page"))
    recorder = await asyncio.to_thread(recorder_of, request)
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue = asyncio.Queue(maxsize=1000)

    def deliver(event: dict) -> None:  # the capture thread: hand over, never wait
        if _foreign(recorder, user):  # someone else's: only that the box is busy, or free
            if event["type"] != "state":
                return
            event = {"type": "state", "state": "busy" if event["state"] != "stopped"
                     else "stopped"}
        loop.call_soon_threadsafe(_offer, inbox, event)

    open_streams[user.id] += 1
    recorder.subscribe(deliver)

    async def stream():
        try:
            yield f"event: status\ndata: {json.dumps(_status(request, recorder, user))}\n\n"
            while True:  # ends when the client goes (Starlette cancels it)
                try:
                    event = await asyncio.wait_for(inbox.get(), KEEP_ALIVE_SECONDS)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                yield f"event: {event['type']}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n"
        finally:
            recorder.unsubscribe(deliver)
            open_streams[user.id] -= 1

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})
