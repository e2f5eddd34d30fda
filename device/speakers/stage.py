"""The speaker stage of the pipeline: who spoke in a transcript (diarization, or one speaker
per channel), names from voiceprints, finding the speakers again, and remembering a voice.

``device.pipeline`` runs ``label_speakers`` after recognition; the job runner runs
``diarize_recording`` and ``remember_voice``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from device import channels
from device.channels import Track
from device.errors import N_, AudioError, InvalidInput
from device.pipeline import Engines, Heard
from device.records import Segment, User
from device.said import Said
from device.settings import Settings, hardware_profile
from device.store import Store

log = logging.getLogger("tingji.speakers")


def diarize_recording(
    store: Store, settings: Settings, engines: Engines, recording_id: int,
    speakers: int | None = None, overwrite: bool = False, user: User | None = None,
) -> int:
    """Find the speakers of a transcribed recording again (another count, say) without
    transcribing it again: text edits stay; names a reviewer gave stay unless ``overwrite``.
    One revision; returns how many segments changed speaker."""
    from device.speakers.diarize import find_speakers, is_automatic, label, speaker_name

    recording = store.get_recording(recording_id)
    layout, tracks = stored_audio(settings, recording)
    segments = store.segments(recording_id)
    open_ = [replace(s, speaker=None) for s in segments
             if overwrite or is_automatic(s.speaker)]
    if layout.mode == "separate":
        names, voices = _channel_voices(engines, settings, [
            Heard(t, engines.detector.speech_chunks(t.samples)) for t in tracks])
        chosen = {s.id: names.get(s.channel or 0) or speaker_name(s.channel or 0)
                  for s in open_}
    else:
        track = tracks[0]
        found = find_speakers(engines.speaker_encoder(), track.samples,
                              engines.detector.speech_chunks(track.samples), speakers,
                              settings.min_speakers, settings.max_speakers)
        names, voices = _known_voices(settings, found)
        chosen = {s.id: s.speaker for s in label(open_, found.turns, split=False, names=names)}
    note = (Said(N_("speakers found again (%(num)d speakers)"), num=speakers) if speakers
            else Said(N_("speakers found again (speakers counted)")))
    changed = store.relabel_speakers(recording_id, chosen, note, user)
    record_voice_uses(settings, recording_id, voices)
    return changed


def stored_audio(settings: Settings, recording) -> tuple[channels.Layout, list[Track]]:
    if recording.audio_file is None:
        raise AudioError(recording.source_name, "no stored audio to find the speakers in")
    try:
        from device import encryption

        return channels.load(encryption.stored_audio(settings, recording),
                             settings.max_audio_seconds)
    except AudioError as exc:  # name the user's file, not our stored copy
        raise type(exc)(recording.source_name, exc.reason) from exc


def label_speakers(
    engines: Engines, settings: Settings, layout: channels.Layout, heard: Sequence[Heard],
    segments: list[Segment], speakers: int | None = None, memo=None,
) -> tuple[list[Segment], str | None, list[tuple[int, str, float]]]:
    """Segments labelled with who spoke (``speakers``: how many, if the user said), why
    they could not be, if so (the transcript is kept either way), and the voiceprints that
    named speakers (id, label, similarity).  Channels transcribed one by one are one
    speaker each; otherwise the speech is diarized (``memo``: where the voice windows
    embedded during the recording are, ``diarize.embeddings``)."""
    from device.speakers.diarize import find_speakers, label, speaker_name
    from models.store import ModelError

    if not settings.diarize or not segments:
        return segments, None, []
    if layout.mode == "separate":
        names, voices = _channel_voices(engines, settings, heard)
        return ([replace(s, speaker=names.get(s.channel or 0) or speaker_name(s.channel or 0))
                 for s in segments], None, voices)
    try:
        encoder = engines.speaker_encoder()
    except ModelError as exc:
        return segments, f"speakers not labelled: {exc}", []
    track = heard[0]
    found = find_speakers(encoder, track.track.samples, track.speech, speakers,
                          settings.min_speakers, settings.max_speakers, memo,
                          workers=hardware_profile(settings).cpu_threads)
    if found.taken:
        log.info("speakers: %d voice windows embedded during the recording taken",
                 found.taken)
    names, voices = _known_voices(settings, found)
    return label(segments, found.turns, names=names), None, voices


def _known_voices(settings: Settings, found) -> tuple[dict[int, str],
                                                      list[tuple[int, str, float]]]:
    """Names for the speakers whose voice matches a voiceprint ("李明?"), and the uses."""
    from device.speakers.voiceprints import match, suggestion
    from device.store.voiceprints import Voiceprints

    if not settings.name_voices or not settings.voiceprints_path.exists():
        return {}, []
    with Voiceprints.of(settings) as prints:
        matched = match(found.voices, found.seconds, *prints.matrix())
    names = {speaker: suggestion(v.name) for speaker, (v, _) in matched.items()}
    return names, [(v.id, names[speaker], similarity)
                   for speaker, (v, similarity) in matched.items()]


def _channel_voices(engines: Engines, settings: Settings, heard: Sequence[Heard]
                    ) -> tuple[dict[int, str], list[tuple[int, str, float]]]:
    """Names from voiceprints for the channels of a recording transcribed channel by
    channel (one speaker each), when any voice is remembered."""
    from device.speakers.diarize import Speakers, find_speakers
    from models.store import ModelError

    if not settings.name_voices or not settings.voiceprints_path.exists():
        return {}, []
    try:
        encoder = engines.speaker_encoder()
    except ModelError:
        return {}, []
    voices, seconds = [], []
    for track in heard:
        found = find_speakers(encoder, track.track.samples, track.speech, speakers=1)
        voices.append(found.voices[0] if found.seconds else np.zeros(256, np.float32))
        seconds.append(found.seconds[0] if found.seconds else 0.0)
    return _known_voices(settings, Speakers([], np.stack(voices), seconds))


def record_voice_uses(settings: Settings, recording_id: int,
                       voices: list[tuple[int, str, float]]) -> None:
    from device.store.voiceprints import Voiceprints

    if voices or settings.voiceprints_path.exists():
        with Voiceprints.of(settings) as prints:
            prints.record_uses(recording_id, voices)


def remember_voice(
    store: Store, settings: Settings, engines: Engines, recording_id: int, speaker: str,
    name: str, consent: str, user: User | None = None,
):
    """Remember the voice of one speaker of a recording as ``name`` (a voiceprint made from
    the segments assigned to that speaker), and give the speaker that name."""
    from device.speakers.voiceprints import ENROL_SECONDS, voice_of
    from device.store.voiceprints import Voiceprints, clean_name

    name = clean_name(name)
    recording = store.get_recording(recording_id)
    theirs = [s for s in store.segments(recording_id, with_words=False) if s.speaker == speaker]
    if not theirs:
        raise InvalidInput(N_("no segment of this recording is assigned to %(speaker)s"),
                           speaker=speaker)
    layout, tracks = stored_audio(settings, recording)
    channel = 0
    if layout.mode == "separate":
        channel = max({s.channel or 0 for s in theirs},
                      key=lambda c: sum(s.end - s.start for s in theirs if (s.channel or 0) == c))
        theirs = [s for s in theirs if (s.channel or 0) == channel]
    vector, seconds = voice_of(engines.speaker_encoder(), tracks[channel].samples,
                               [(s.start, s.end) for s in theirs])
    if seconds < ENROL_SECONDS:
        raise InvalidInput(N_("%(speaker)s speaks for %(seconds)d s in this recording: at "
                              "least %(needed)d s of speech are needed to remember a voice"),
                           speaker=speaker, seconds=round(seconds), needed=round(ENROL_SECONDS))
    with Voiceprints.of(settings, store) as prints:
        voiceprint = prints.enrol(name, vector, seconds=seconds,
                                  enrolled_by=user.username if user else None,
                                  recording_id=recording.id, recording_title=recording.title,
                                  speaker=speaker, consent=consent)
    if speaker != name:
        store.rename_speaker(recording_id, speaker, name, user)
    return voiceprint
