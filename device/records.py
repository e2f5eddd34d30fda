"""The typed records that flow between the pipeline's stages and out of the store."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Word:
    start: float
    end: float
    text: str
    probability: float


@dataclass(frozen=True)
class Segment:
    """A stretch of recognised speech; times are seconds from the start of the recording."""

    start: float
    end: float
    text: str
    language: str | None = None
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    compression_ratio: float = 1.0
    words: tuple[Word, ...] = ()
    id: int | None = None
    """Store id, None until stored."""
    speaker: str | None = None
    revision: int = 0
    channel: int | None = None
    """The channel (0 = left) of a recording whose channels were transcribed one by one."""
    profile: str | None = None
    """The dialect profile this segment was decoded with (auto mode decides per window)."""


@dataclass(frozen=True)
class Recording:
    id: int
    title: str
    source_name: str
    status: str
    """queued, transcribing, done, failed."""
    created: str
    updated: str
    audio_file: str | None = None
    """File name under the data directory's audio/ folder, named by id."""
    duration: float | None = None
    language: str | None = None
    language_probability: float | None = None
    model_id: str | None = None
    error: str | None = None
    profile: str | None = None
    """The dialect profile the transcript was made with (auto mode stores its choice)."""
    script: str | None = None
    """Output script chosen for this recording, overriding the profile's."""
    terms: list | None = None
    """This recording's own hotwords and corrections ("misheard=right")."""
    language_probabilities: dict | None = None
    auto_decision: dict | None = None
    owner_id: int | None = None
    """The account that recorded or uploaded it (interviewers see only their own)."""
    channel_layout: dict | None = None
    """How several channels were arranged for recognition (``device.channels.Layout``)."""
    speakers: int | None = None
    """How many people speak, if the interviewer said so when recording."""
    reviewed_at: str | None = None
    """When a reviewer confirmed the transcript (retention counts audio rules from then)."""
    legal_hold: str | None = None
    """Why it is held (None: not held): a held recording is never erased."""
    audio_erased: str | None = None
    """When the retention rules erased its audio (the transcript stays)."""
    final_pass_until: float | None = None
    """While it is recorded: the seconds of it the final pass has decoded (``device.ready``)."""
    notes_until: float | None = None
    """While it is recorded: the seconds of it read into the summary's notes."""


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    recording_id: int
    status: str
    """queued, running, done, failed."""
    progress: float
    attempts: int
    created: str
    params: dict = field(default_factory=dict)
    error: str | None = None
    started: str | None = None
    finished: str | None = None
    worker_pid: int | None = None
    worker_started: float | None = None
    stage: str | None = None
    """What the running job is doing, in words."""


@dataclass(frozen=True)
class SearchHit:
    recording_id: int
    recording_title: str
    segment_id: int
    start: float
    end: float
    text: str


ROLES = ("interviewer", "reviewer", "admin")
"""Each role can do what the ones before it can: interviewers record and see their own
recordings; reviewers see, edit and export all; admins also manage users and the box."""


@dataclass(frozen=True)
class User:
    id: int
    username: str
    password_hash: str
    role: str
    created: str
    language: str | None = None
    """The pages' language this user chose (zh-CN, zh-TW, en); None: the browser's."""

    def can(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


@dataclass(frozen=True)
class Marker:
    """A bookmark an interviewer set while recording; ``t`` is seconds into the recording."""

    id: int
    recording_id: int
    t: float
    note: str


@dataclass(frozen=True)
class Summary:
    """One stored version of a recording's summary (every version is kept)."""

    id: int
    recording_id: int
    version: int
    model_id: str | None
    prompt_version: str | None
    transcript_hash: str | None
    """The transcript it was written from (``Store.transcript_hash``)."""
    content: dict
    """title, summary, key_points, decisions, action_items, keywords (see summarize.py)."""
    flags: list
    """Claims the grounding check could not find in their cited segments."""
    created: str


@dataclass(frozen=True)
class Revision:
    """One change to a transcript: the segments before and after it (store snapshots, as
    JSON), so an undo puts back exactly what was there."""

    id: int
    recording_id: int
    kind: str
    note: str | None
    user_id: int | None
    username: str | None
    before: list
    after: list
    undone_by: int | None
    created: str


@dataclass(frozen=True)
class GlossaryEntry:
    """An admin's hotword; with ``misheard``, also a correction of that mis-hearing."""

    id: int
    term: str
    misheard: str | None


@dataclass(frozen=True)
class Deletion:
    """A deleted recording, as the admin's history keeps it."""

    id: int
    recording_id: int
    title: str
    owner_id: int | None
    user_id: int | None
    username: str | None
    created: str


@dataclass(frozen=True)
class Voiceprint:
    """A remembered voice: the centroid of one speaker's speech, enrolled by a reviewer."""

    id: int
    name: str
    seconds: float
    """How much speech it was made from."""
    enrolled_by: str | None
    enrolled_at: str
    recording_id: int | None
    recording_title: str | None
    speaker: str
    """The label the speaker had in that recording."""
    consent: str
    """What the reviewer noted about the person's consent."""
    embedding: bytes = field(default=b"", repr=False)


@dataclass(frozen=True)
class VoiceUse:
    """A recording in which a voiceprint named a speaker (as a suggestion: "李明?")."""

    voiceprint_id: int
    recording_id: int
    speaker: str
    similarity: float
    at: str


@dataclass(frozen=True)
class AuditEntry:
    """One line of the audit trail: who (user, address) did what (action) to what (object)."""

    id: int
    at: str
    user_id: int | None
    username: str | None
    address: str | None
    action: str
    object: str | None
    details: dict
    prev: str
    """The hash of the entry before (its link in the chain)."""
    hash: str


@dataclass(frozen=True)
class AuditHead:
    """The chain's hash at an entry, signed by the box's audit key."""

    id: int
    entry_id: int
    hash: str
    signature: str
    at: str
    reason: str | None
