"""Import audio into the library and transcribe a recording: decode (channels) -> VAD -> ASR
-> store."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from device import audio, channels, encryption, varieties
from device.channels import Track
from device.errors import N_, AudioError, DiskFullError, InvalidInput, TingjiError
from device.profiles import (
    AUTO,
    NO_TERMS,
    SCRIPTS,
    AutoDecision,
    Profile,
    ProfileError,
    Terms,
    finish_segment,
    get_profile,
    load_profiles,
)
from device.recognize import RecognitionOptions, Recognizer
from device.records import Job, Recording, Segment, User
from device.settings import Settings
from device.store import Store
from device.vad import SpeechChunk, SpeechDetector


def import_audio(
    store: Store, settings: Settings, path: Path, *, title: str | None = None,
    language: str | None = None, profile: str | None = None, script: str | None = None,
    terms: Sequence[str] = (), owner_id: int | None = None, speakers: int | None = None,
    sealed_with: bytes | None = None, fast: bool = False,
) -> tuple[Recording, Job]:
    """Copy a file into the library as a new recording with a queued transcription job.

    The profile (or a language, which picks one) is checked first: a bad choice raises
    ProfileError before anything is stored.  A file that is missing, empty or over the size
    limit still gets a recording and a job, both marked failed with the reason, and the
    error is raised for the caller to report.  ``sealed_with``: the file was sealed with
    this data key as it arrived (an upload on an encrypted box), and is moved into place.
    ``fast``: transcribe it as a quick draft (``recognize_tracks``).
    """
    path = Path(path)
    chosen = select_profile(settings, profile, language)
    if script is not None and script not in SCRIPTS:
        raise ProfileError(f"script {script!r}; choose one of {', '.join(SCRIPTS)}")
    Terms.parse(terms)  # refuse malformed terms now, not in the worker
    recording = store.create_recording(title or path.stem, source_name=path.name,
                                       owner_id=owner_id)
    recording = store.update_recording(recording.id, profile=chosen.name, script=script,
                                       terms=list(terms) or None)
    params = {"language": language or chosen.language}
    if speakers:
        params["speakers"] = int(speakers)
    if fast:
        params["fast"] = True
    try:
        size = audio.check_size(path, settings.max_upload_bytes)
        settings.audio_dir.mkdir(parents=True, exist_ok=True)
        keep_room_for_recording(settings, size, path.name)
        name = audio.stored_name(recording.id, path.with_suffix("") if sealed_with else path)
        if sealed_with is not None:
            name += encryption.SUFFIX
            encryption.adopt_sealed(settings, recording.id, path, sealed_with,
                                    settings.audio_dir / name)
        elif encryption.enabled(settings):  # sealed to the box's key: no secret needed
            name += encryption.SUFFIX
            encryption.store_sealed(settings, recording.id, path, settings.audio_dir / name)
        else:
            audio.copy_durably(path, settings.audio_dir / name)
    except (AudioError, DiskFullError) as exc:
        store.fail_job(store.enqueue("transcribe", recording.id, params).id, str(exc))
        raise
    # Queued only once the copy is durable: a worker that takes the job at once finds it.
    with store.transaction():
        recording = store.update_recording(recording.id, audio_file=name)
        job = store.enqueue("transcribe", recording.id, params)
    return recording, job


def delete_recording(store: Store, settings: Settings, recording_id: int,
                     user: User | None = None) -> Recording:
    """Delete a recording with its audio, from the update backups of the database too (the
    deletion itself is kept: ``store.deletions``)."""
    from device.store.voiceprints import Voiceprints

    recording = store.delete_recording(recording_id, user)
    from device.databases import erase_from_backups

    erase_from_backups(settings, recording_id)  # the copies updates keep, too
    if settings.voiceprints_path.exists():
        try:
            prints = Voiceprints.of(settings)
        except encryption.BoxLocked:  # forgotten at their next opening with the store
            pass
        else:
            with prints:
                prints.forget_recording(recording_id)
    erase_audio_files(settings, recording)
    return recording


def erase_audio_files(settings: Settings, recording: Recording) -> None:
    """A recording's audio gone from the box: its data key destroyed (every copy of its
    sealed audio unreadable), its file or sealed segments and its capture folder removed."""
    from device.recorder import capture_dir  # the recorder builds on this module

    encryption.erase(settings, recording.id)
    if recording.audio_file:
        stored = settings.audio_dir / recording.audio_file
        if stored.is_dir():  # a recording's sealed segments
            shutil.rmtree(stored, ignore_errors=True)
        else:
            stored.unlink(missing_ok=True)
    shutil.rmtree(capture_dir(settings, recording.id), ignore_errors=True)


def keep_room_for_recording(settings: Settings, size: int, name: str) -> None:
    """DiskFullError when storing ``size`` bytes more would eat into the space kept free
    for live recording."""
    free = shutil.disk_usage(settings.data_dir).free
    if free - size < settings.disk_reserve_bytes:
        raise DiskFullError(
            f"{name}: storing it would leave {max(free - size, 0) / 1e9:.1f} GB free, less "
            f"than the {settings.disk_reserve_bytes / 1e9:.1f} GB kept for recording: free "
            "some space first")


def select_profile(settings: Settings, name: str | None, language: str | None = None) -> Profile:
    """The named profile, or the plain profile of a language, or auto; validated against
    the model store.  ProfileError lists the valid choices."""
    from models.store import load_manifest

    profiles = load_profiles(settings.data_dir)
    manifest = load_manifest(models_dir=settings.models_dir)
    if name and name.startswith(f"{AUTO}-") and name not in profiles:
        name, language = None, name.removeprefix(f"{AUTO}-")  # auto with a fixed language

    def languages(model_id: str):
        return set(manifest[model_id].languages) if model_id in manifest else None

    if name is None and language not in (None, "", AUTO):
        plain = [p for p in profiles.values() if p.language == language and not p.markers]
        if plain:
            name = plain[0].name
        else:
            auto = get_profile(AUTO, profiles, languages)
            if language not in (languages(auto.model) or ()):
                raise ProfileError(f"language {language!r} is not one model {auto.model} knows; "
                                   f"choose one of {', '.join(sorted(languages(auto.model)))}")
            return replace(auto, name=f"{AUTO}-{language}", language=language)
    return get_profile(name or AUTO, profiles, languages)


def requeue_recording(
    store: Store, settings: Settings, recording_id: int, *, profile: str | None = None,
    script: str | None = None, terms: Sequence[str] | None = None, fast: bool = False,
) -> tuple[Recording, Job]:
    """Queue a stored recording for transcription again (another profile, new terms, the
    accurate transcript of a quick draft, or after a failure that has since been fixed);
    its audio was kept.  ``fast``: as a quick draft again."""
    recording = store.get_recording(recording_id)
    if recording.status == "recording":
        raise InvalidInput(N_("it is being recorded: stop the recording first"))
    if recording.audio_file is None:
        raise AudioError(recording.source_name, "no stored audio to transcribe")
    if any(j.status in ("queued", "running") for j in store.jobs_for(recording_id)):
        raise TingjiError(N_("recording %(id)s is already queued for transcription"),
                          id=recording_id)
    chosen = select_profile(settings, profile or recording.profile)
    if script is not None and script not in SCRIPTS:
        raise ProfileError(f"script {script!r}; choose one of {', '.join(SCRIPTS)}")
    fields: dict[str, object] = {"profile": chosen.name, "status": "queued", "error": None}
    if script is not None:
        fields["script"] = script
    if terms is not None:
        Terms.parse(terms)
        fields["terms"] = list(terms) or None
    recording = store.update_recording(recording_id, **fields)
    return recording, store.enqueue("transcribe", recording_id,
                                    {"language": None, **({"fast": True} if fast else {})})


class Engines:
    """The models a worker loads once and reuses: the VAD, and a recogniser per model id
    (profiles name their model), each loaded on first use."""

    def __init__(self, detector: SpeechDetector, load: Callable[[str], Recognizer],
                 load_speaker_encoder: Callable[[], object] | None = None):
        self.detector = detector
        self._load = load
        self._recognizers: dict[str, Recognizer] = {}
        self._load_speaker_encoder = load_speaker_encoder
        self._speaker_encoder = None
        self._memo = None

    def speaker_encoder(self):
        """The speaker encoder, verified and loaded on first use; ModelError when it is not
        installed or damaged (the message names the command that fixes it)."""
        from models.store import ModelMissingError

        if self._speaker_encoder is None:
            if self._load_speaker_encoder is None:
                raise ModelMissingError("no speaker model is configured for this worker")
            self._speaker_encoder = self._load_speaker_encoder()
        return self._speaker_encoder

    @contextmanager
    def remembering(self, memo) -> Iterator[None]:
        """Within: the recognisers take windows decoded ahead from ``memo`` and keep what
        they decode in it (``recognize.memo``)."""
        self._memo = memo
        try:
            for recognizer in self._recognizers.values():
                recognizer.memo = memo
            yield
        finally:
            self._memo = None
            for recognizer in self._recognizers.values():
                recognizer.memo = None

    def recognizer(self, model_id: str) -> Recognizer:
        if model_id not in self._recognizers:
            self._recognizers[model_id] = self._load(model_id)
            self._recognizers[model_id].memo = self._memo
        return self._recognizers[model_id]


def transcribe_recording(
    store: Store,
    settings: Settings,
    engines: Engines,
    job: Job,
    on_progress: Callable[[float], None] = lambda percent: None,
) -> list[Segment]:
    """Run one claimed transcription job to completion; the transcript is stored atomically.

    AudioError and ProfileError propagate (the caller marks the job failed, the audio stays
    for another try); nothing is written before the final transaction, so an interrupted
    run leaves no partial transcript.
    """
    recording = store.get_recording(job.recording_id)
    if recording.audio_file is None:
        raise AudioError(recording.source_name, "the recording has no stored audio")
    language = job.params.get("language")
    profile = select_profile(settings, recording.profile, language)
    try:
        layout, tracks = channels.load(encryption.stored_audio(settings, recording),
                                       settings.max_audio_seconds)
    except AudioError as exc:  # name the user's file, not our stored copy
        raise type(exc)(recording.source_name, exc.reason) from exc
    duration = tracks[0].samples.size / audio.SAMPLE_RATE
    store.update_recording(recording.id, status="transcribing", duration=duration)
    heard = [Heard(t, engines.detector.speech_chunks(t.samples)) for t in tracks]
    on_progress(3.0)
    terms = recording_terms(store, recording)
    from device.ready import StoredWindows

    ahead = StoredWindows(store, recording.id)  # decoded and embedded while recording
    with engines.remembering(ahead):
        result = recognize_tracks(engines, settings, heard, profile, terms, recording.script,
                                  on_progress, fast=bool(job.params.get("fast")))
    from device.speakers.stage import label_speakers, record_voice_uses

    segments, unlabelled, voices = label_speakers(engines, settings, layout, heard,
                                                  result.segments, job.params.get("speakers"),
                                                  ahead)
    decision = result.decision
    probabilities = decision.probabilities if decision else None
    store.complete_transcription(
        job.id, recording.id, segments,
        language=result.language,
        language_probability=(probabilities or {}).get(result.language) if decision else None,
        language_probabilities=probabilities,
        auto_decision=asdict(decision) if decision else None,
        profile=result.profile.name,
        duration=duration,
        model_id=result.model_id,
        channel_layout=layout.as_dict() if layout.channels > 1 else None,
        error=unlabelled,
    )
    record_voice_uses(settings, recording.id, voices)
    return segments


def recording_terms(store: Store, recording: Recording) -> Terms:
    """The admin's glossary and the recording's own terms."""
    return Terms.parse([g.term if not g.misheard else f"{g.misheard}={g.term}"
                        for g in store.glossary()] + list(recording.terms or []))


@dataclass(frozen=True)
class Recognition:
    segments: list[Segment]
    profile: Profile
    """The profile used: in auto mode, the one chosen."""
    language: str | None
    """The language of most of the speech."""
    model_id: str
    decision: AutoDecision | None


@dataclass(frozen=True)
class Heard:
    """A track to transcribe and the speech the VAD found in it."""

    track: Track
    speech: Sequence[SpeechChunk]

    @property
    def speech_seconds(self) -> float:
        return sum(c.end - c.start for c in self.speech) / audio.SAMPLE_RATE


def recognize(
    engines: Engines, settings: Settings, samples, speech: Sequence[SpeechChunk],
    profile: Profile, terms: Terms = NO_TERMS, script: str | None = None,
    on_progress: Callable[[float], None] = lambda percent: None, decide: bool = True,
) -> Recognition:
    """Speech chunks of one signal -> finished segments in time order, as the profile (or
    auto mode) says.

    ``decide=False`` keeps an auto profile as it is (Whisper alone: no prompt, no variety).
    """
    return recognize_tracks(engines, settings, [Heard(Track(samples, None), speech)], profile,
                            terms, script, on_progress, decide)


def recognize_tracks(
    engines: Engines, settings: Settings, heard: Sequence[Heard], profile: Profile,
    terms: Terms = NO_TERMS, script: str | None = None,
    on_progress: Callable[[float], None] = lambda percent: None, decide: bool = True,
    ahead: bool = False, fast: bool = False,
) -> Recognition:
    """``recognize`` over the tracks of one recording (its channels, when they are
    transcribed one by one).  Auto mode decides on the track with the most speech: its
    languages, and the variety of each window (``device.varieties``); tracks transcribed
    one by one all take the variety of its first window.  Segments keep their track's
    channel and their profile, and come out in time order.

    ``ahead``: the final pass during a recording (``device.ready``), over the windows no
    later audio can change: its first pass, and of the speech that lost, the windows no
    speech lost later joins.

    ``fast``: a quick draft — one greedy pass that leaves lost what a window loses
    (``RecognitionOptions.draft``); in auto mode nothing detected or tried before it: each
    window is decoded in its own language, each segment finished with its language's plain
    profile."""
    decision = None
    main = max(heard, key=lambda h: h.speech_seconds)
    blocks: dict[int, Iterable[varieties.Block]] = {}
    if profile.is_auto and main.speech and decide and fast:  # each window its own language
        decision = AutoDecision(AUTO, None, {})
    elif profile.is_auto and main.speech and decide:
        decision, profile, planned = varieties.decide(engines, main.track.samples,
                                                      main.speech, profile, settings, terms)
        if len(heard) == 1:
            blocks[0] = planned
    on_progress(8.0)
    languages = decision.languages() if decision else ()
    options = recognition_options(profile, terms, settings, auto=decision is not None,
                                  languages=languages)
    if ahead:  # of what the first pass lost, what no later speech changes
        options = replace(options, ahead=True)
    if fast:
        options = options.draft()
    recognizer = engines.recognizer(profile.model)
    auto_profiles = load_profiles(settings.data_dir) if decision is not None else {}

    def prompt_of(chosen: Profile) -> str | None:
        return recognition_options(chosen, terms, settings, auto=decision is not None,
                                   languages=languages).initial_prompt

    segments: list[Segment] = []
    spoken: dict[str, float] = {}  # seconds of speech per profile
    seen = {profile.name: profile}
    for n, h in enumerate(heard):
        duration = h.track.samples.size / audio.SAMPLE_RATE
        furthest = 0.0
        chosen_from: list[tuple[float, Profile]] = []  # every block's, as they are taken
        planned = blocks.get(n) or varieties.blocks_of(
            h.speech, profile, varieties.DRAFT_BLOCK if fast else varieties.BLOCK)
        for segment in recognizer.transcribe_blocks(
                h.track.samples, stretches(planned, options, prompt_of, chosen_from)):
            chosen = varieties.profile_at(chosen_from, (segment.start + segment.end) / 2)
            if decision is not None:
                chosen = varieties.in_its_language(chosen, segment.language, auto_profiles)
            segment = finish_segment(segment, chosen, terms, script)
            segments.append(replace(segment, channel=h.track.channel, profile=chosen.name))
            spoken[chosen.name] = spoken.get(chosen.name, 0.0) + segment.end - segment.start
            seen[chosen.name] = chosen
            furthest = max(furthest, segment.end)
            done = (n + min(furthest / max(duration, 1e-6), 1.0)) / len(heard)
            on_progress(8.0 + 91.0 * done)
    segments.sort(key=lambda s: (s.start, s.end))
    language = _majority_language(segments) or options.language
    if decision is not None and spoken:  # the recording's: the profile of most speech
        profile = seen[max(spoken, key=spoken.get)]
    if fast and decision is not None:
        decision = replace(decision, profile=profile.name, language=language)
    return Recognition(segments, profile, language, recognizer.model_id, decision)


def stretches(
    blocks: Iterable[varieties.Block], options: RecognitionOptions,
    prompt_of: Callable[[Profile], str | None], taken: list[tuple[float, Profile]],
) -> Iterator[tuple[list[SpeechChunk], RecognitionOptions]]:
    """The blocks' speech with their options (the prompt of each block's profiles), each
    block's profiles added to ``taken`` as it is taken."""
    for block in blocks:
        taken.extend(block.profiles)
        yield block.speech, replace(
            options, initial_prompt=prompt_of(block.profiles[0][1]),
            prompts=tuple((start, prompt_of(p)) for start, p in block.profiles[1:]))


def recognition_options(
    profile: Profile, terms: Terms, settings: Settings, auto: bool = False,
    languages: Sequence[str] = (),
) -> RecognitionOptions:
    """What a profile asks of the recogniser.

    An explicit profile fixes the language and prompts in its own written form.  In auto mode
    every window is decoded in its own detected language, among the recording's
    (``languages``) where one has its script (``RecognitionOptions.languages``): a recording
    of one language is decoded in it, but for what is said in another script (English
    sentences among Mandarin ones escape the recording's detection).  Only a variety's
    prompt is used (it is what makes Whisper write Cantonese rather than Mandarin): a
    standard-language prompt makes Whisper translate another language's windows into it,
    and over minutes of speech it wrote pieces of itself for whole sentences and lost
    others (docs/benchmarks.md).
    """
    hotwords = tuple(dict.fromkeys(profile.hotwords + terms.hotwords))
    return RecognitionOptions(
        language=None if auto or profile.is_auto else profile.language,
        initial_prompt=profile.prompt if not auto or profile.markers else None,
        hotwords="，".join(hotwords) if hotwords else None,
        beam_size=settings.beam_size,
        batch_size=settings.batch_size,
        languages=tuple(languages),
    )


def _majority_language(segments: list[Segment]) -> str | None:
    totals: dict[str, float] = {}
    for s in segments:
        if s.language:
            totals[s.language] = totals.get(s.language, 0.0) + (s.end - s.start)
    return max(totals, key=totals.get) if totals else None
