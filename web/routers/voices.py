"""Speakers as people: merging two labels, remembering a voice, and the admin's page of the
voiceprints the box keeps.

POST /api/recordings/{id}/speakers/merge   (reviewer) {speaker, into}
POST /api/recordings/{id}/voiceprints      (reviewer) {speaker, name, consent, agreed}:
                                           queues making the voiceprint
GET  /admin/voiceprints                    (admin) every voiceprint and where it was used
POST /admin/voiceprints/{id}/delete        (admin)
"""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field

from device.encryption import BoxLocked
from device.errors import N_
from device.speakers.voiceprints import suggestion
from device.store.voiceprints import Voiceprints, clean_name
from device.text import NAME_MAX, NOTE_MAX
from web.deps import Admin, Refused, Reviewer, RowId, SettingsDep, StoreDep, templates

router = APIRouter()


class SpeakerMerge(BaseModel):
    speaker: str = Field(max_length=NAME_MAX)
    into: str = Field(max_length=NAME_MAX)


@router.post("/api/recordings/{recording_id}/speakers/merge")
def merge_speakers(recording_id: RowId, body: SpeakerMerge, user: Reviewer, store: StoreDep):
    store.get_recording(recording_id)
    return {"changed": store.merge_speakers(recording_id, body.speaker, body.into, user)}


class RememberVoice(BaseModel):
    speaker: str = Field(max_length=NAME_MAX)
    """The speaker's label in this recording."""
    name: str = Field(max_length=NAME_MAX)
    consent: str = Field(default="", max_length=NOTE_MAX)
    """How the person agreed (a note kept with the voiceprint)."""
    agreed: bool = False
    """The reviewer confirms the person agreed to have their voice remembered."""


@router.post("/api/recordings/{recording_id}/voiceprints")
def remember_voice(recording_id: RowId, body: RememberVoice, user: Reviewer,
                   store: StoreDep):
    """Queue remembering a speaker's voice under a name (the worker computes it)."""
    recording = store.get_recording(recording_id)
    if recording.status != "done":
        raise Refused(409, N_("the transcript is not finished yet"))
    if not body.agreed:
        raise Refused(400, N_("a voice is remembered only with the person's consent: confirm "
                              "that they agreed"))
    name = clean_name(body.name)
    if not any(s.speaker == body.speaker
               for s in store.segments(recording_id, with_words=False)):
        raise Refused(400, N_("no segment of this recording is assigned to %(speaker)s"),
                      speaker=body.speaker)
    return asdict(store.enqueue("remember_voice", recording_id, {
        "speaker": body.speaker, "name": name, "consent": body.consent,
        "user_id": user.id}))


@router.get("/admin/voiceprints")
def voiceprints_page(request: Request, user: Admin, store: StoreDep, settings: SettingsDep):
    rows = []
    if settings.voiceprints_path.exists():
        with _voiceprints(settings, store) as prints:
            for voiceprint in prints.all():
                uses = []
                for use in prints.uses(voiceprint.id):
                    labels = {s.speaker for s in store.segments(use.recording_id,
                                                                with_words=False)}
                    state = (N_("confirmed") if voiceprint.name in labels else
                             N_("suggested") if suggestion(voiceprint.name) in labels else
                             N_("changed by a reviewer"))
                    uses.append({"use": use, "state": state,
                                 "title": _title(store, use.recording_id)})
                rows.append({"voiceprint": voiceprint, "uses": uses})
    return templates(request).TemplateResponse(request, "voiceprints.html", {"rows": rows})


def _voiceprints(settings, store) -> Voiceprints:
    try:
        return Voiceprints.of(settings, store)
    except BoxLocked as exc:  # encrypted with the box's key
        raise Refused(423, exc) from exc


def _title(store, recording_id: int) -> str | None:
    from device.errors import NotFound

    try:
        return store.get_recording(recording_id).title
    except NotFound:
        return None


@router.post("/admin/voiceprints/{voiceprint_id}/delete")
def delete_voiceprint(voiceprint_id: RowId, user: Admin, store: StoreDep,
                      settings: SettingsDep):
    """Remove a voiceprint from the box (names already in transcripts stay as text)."""
    if not settings.voiceprints_path.exists():
        raise Refused(404, N_("no voiceprint with id %(id)s"), id=voiceprint_id)
    with _voiceprints(settings, store) as prints:
        prints.delete(voiceprint_id)
    return RedirectResponse("/admin/voiceprints", status_code=303)
