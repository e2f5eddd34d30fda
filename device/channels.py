"""Recordings of more than one channel: what the recogniser hears, without losing any
channel's speech.

A plain downmix (the mean of the channels, what FFmpeg's ``mono`` layout does) loses speech
three ways: two people on their own channels talking at once come out as one overlapped
voice, of which Whisper writes one; a channel wired in reverse polarity cancels the other;
and a quiet channel is buried under a hissing one.  So the channels are measured in short
frames first:

- **separate** — each channel has speech of its own, stretches where it alone is loud (a
  lapel microphone per person, a phone call recorded one side per channel).  Each channel is
  transcribed on its own; where another channel is much louder, what this one picked up is
  the other person from afar, and it is muted there so nothing is written twice.  Every
  segment keeps its channel, which tells diarization who spoke.
- **mixed** — the channels carry the same scene (a stereo microphone, a mono signal on two
  channels).  One mix: each channel brought to the speech level of the loudest, turned
  over when it is in reverse polarity, and weighted frame by frame by how far it stands
  above its own noise floor.  A channel of silence or steady hiss is left out.

Stereo is the most kept: decoding asks FFmpeg for at most two channels (its downmix of a
surround layout keeps every voice in the two).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device import audio
from device.audio import SAMPLE_RATE

FRAME = SAMPLE_RATE // 50
"""Samples per measured frame (20 ms)."""
ACTIVE_DB = 10.0
"""A frame is active in a channel when it stands this far above the channel's noise floor."""
DOMINANT_DB = 10.0
"""A channel dominates a frame when it is active and this much louder than every other
channel, each at its own speech level."""
MUTE_DB = 6.0
"""Transcribing channels separately, a channel is muted where another is this much louder."""
OWN_SPEECH_SECONDS = 1.0
OWN_SPEECH_SHARE = 0.05
"""Channels are separate when each dominates at least this long and this share of the
frames where any channel is active."""
EDGE_SECONDS = 0.2
"""Muting keeps this far from a channel's own speech: word edges are kept."""
PAUSE_SECONDS = 0.5
"""Muting holds across the other person's pauses up to this long."""
SILENT_RMS = 1e-4
"""A channel whose loudest frames stay under this (-80 dBFS) carries nothing; one whose
loudest frames stay within ``ACTIVE_DB`` of its floor carries a steady hiss."""
_BLOCK = 60 * SAMPLE_RATE


@dataclass(frozen=True)
class Track:
    """What the recogniser hears: a mono float32 signal, from one channel or a mix."""

    samples: np.ndarray
    channel: int | None
    """The channel (0 = left) transcribed alone, or None for a mix or a mono file."""


@dataclass(frozen=True)
class Layout:
    """How a recording's channels were arranged for recognition (stored with it)."""

    channels: int
    mode: str
    """"mono", "mixed" (one level-aware mix) or "separate" (each channel on its own)."""
    flipped: tuple[int, ...] = ()
    """Channels turned over before mixing (reverse polarity)."""
    silent: tuple[int, ...] = ()
    """Channels that carry no speech (nothing, or a steady hiss) and were left out."""
    own_speech: tuple[float, ...] = ()
    """Seconds in which each channel alone was loud."""

    def as_dict(self) -> dict:
        return {"channels": self.channels, "mode": self.mode, "flipped": list(self.flipped),
                "silent": list(self.silent),
                "own_speech": [round(s, 1) for s in self.own_speech]}


@dataclass(frozen=True)
class _Frames:
    """Per-frame measurements of every channel."""

    energy: np.ndarray
    """(channels, frames) mean square, in the channel's own scale."""
    floor: np.ndarray
    """(channels,) noise floor: a low percentile of the frame energies."""
    level: np.ndarray
    """(channels,) speech level: a high percentile of the frame energies."""
    cross: np.ndarray
    """(frames,) mean product of the first two channels."""

    @property
    def active(self) -> np.ndarray:
        return self.energy > self.floor[:, None] * 10 ** (ACTIVE_DB / 10)

    @property
    def normalised(self) -> np.ndarray:
        """Energies with every channel at the same speech level."""
        return self.energy / self.level[:, None]


def arrange(pcm: np.ndarray) -> tuple[Layout, list[Track]]:
    """The tracks to transcribe from decoded channels: ``pcm`` is (channels, samples),
    int16 or float.  One channel gives itself; see the module for more."""
    pcm = np.atleast_2d(pcm)
    channels = pcm.shape[0]
    if channels == 1:
        return Layout(1, "mono"), [Track(_as_float(pcm[0]), None)]
    frames = _measure(pcm)
    silent = tuple(int(c) for c in np.flatnonzero(
        (np.sqrt(frames.level) < SILENT_RMS)
        | (frames.level < frames.floor * 10 ** (ACTIVE_DB / 10))))  # a steady hiss
    live = [c for c in range(channels) if c not in silent]
    if len(live) <= 1:
        only = live[0] if live else 0
        return Layout(channels, "mixed", silent=silent), [Track(_as_float(pcm[only]), None)]
    # every channel is brought to the speech level of the loudest
    target = float(np.sqrt(frames.level[live].max()))
    own = _own_speech(frames, live)
    active = np.count_nonzero(frames.active[live].any(axis=0))
    seconds = tuple(float(n) * FRAME / SAMPLE_RATE for n in own)
    if all(s >= OWN_SPEECH_SECONDS and n >= OWN_SPEECH_SHARE * active
           for s, n in zip((seconds[c] for c in live), (own[c] for c in live), strict=True)):
        layout = Layout(channels, "separate", silent=silent, own_speech=seconds)
        return layout, [Track(_muted(pcm, frames, c, live, target), c) for c in live]
    flipped = _reversed_polarity(frames, live)
    layout = Layout(channels, "mixed", flipped=flipped, silent=silent, own_speech=seconds)
    return layout, [Track(_mix(pcm, frames, live, flipped, target), None)]


def mean_mix(pcm: np.ndarray) -> np.ndarray:
    """The plain downmix (what FFmpeg's mono layout gives), kept to measure against."""
    pcm = np.atleast_2d(pcm)
    return (pcm.astype(np.float32).mean(axis=0) / _scale(pcm)).astype(np.float32)


def _scale(pcm: np.ndarray) -> float:
    return 32768.0 if pcm.dtype == np.int16 else 1.0


def _as_float(samples: np.ndarray) -> np.ndarray:
    if samples.dtype == np.int16:
        return audio.from_pcm16(samples)
    return np.asarray(samples, dtype=np.float32)


def _blocks(n: int) -> Iterator[slice]:
    for start in range(0, n, _BLOCK):
        yield slice(start, min(start + _BLOCK, n))


def _measure(pcm: np.ndarray) -> _Frames:
    channels, n = pcm.shape
    count = -(-n // FRAME)
    energy = np.zeros((channels, count))
    cross = np.zeros(count)
    for block in _blocks(n):
        first = block.start // FRAME
        part = np.zeros((channels, -(-(block.stop - block.start) // FRAME) * FRAME))
        part[:, : block.stop - block.start] = pcm[:, block]
        part /= _scale(pcm)
        framed = part.reshape(channels, -1, FRAME)
        energy[:, first : first + framed.shape[1]] = (framed ** 2).mean(axis=2)
        cross[first : first + framed.shape[1]] = (framed[0] * framed[1]).mean(axis=1)
    tiny = 1e-12
    floor = np.maximum(np.percentile(energy, 10, axis=1), tiny)
    level = np.maximum(np.percentile(energy, 95, axis=1), tiny)
    return _Frames(energy=energy, floor=floor, level=level, cross=cross)


def _own_speech(frames: _Frames, live: list[int]) -> list[int]:
    """Frames in which each channel alone is loud (0 for channels left out)."""
    normalised = frames.normalised
    active = frames.active
    own = [0] * frames.energy.shape[0]
    for c in live:
        others = np.max(normalised[[o for o in live if o != c]], axis=0)
        alone = active[c] & (normalised[c] > others * 10 ** (DOMINANT_DB / 10))
        own[c] = int(np.count_nonzero(alone))
    return own


def _reversed_polarity(frames: _Frames, live: list[int]) -> tuple[int, ...]:
    """Channels to turn over before mixing: the second of the first two when, where both
    are active, they are mostly opposite."""
    if live[:2] != [0, 1]:
        return ()
    both = frames.active[0] & frames.active[1]
    if not both.any():
        return ()
    correlation = frames.cross[both].sum() / np.sqrt(
        frames.energy[0, both].sum() * frames.energy[1, both].sum())
    return (1,) if correlation < -0.2 else ()


def _normalised(samples: np.ndarray, level: float, target: float) -> np.ndarray:
    """``samples`` with a speech level (mean square) of ``level`` brought to RMS
    ``target``."""
    out = _as_float(samples)
    out *= target / np.sqrt(level)
    return np.clip(out, -1.0, 1.0, out=out)


def _smooth(values: np.ndarray, width: int = 5) -> np.ndarray:
    kernel = np.ones(width) / width
    return np.convolve(np.pad(values, width // 2, mode="edge"), kernel, mode="valid")


def _per_sample(per_frame: np.ndarray, block: slice) -> np.ndarray:
    """Frame values interpolated to the samples of ``block`` (frame centres)."""
    positions = np.arange(block.start, block.stop, dtype=np.float64)
    centres = np.arange(per_frame.size) * FRAME + FRAME / 2
    first = max(int(block.start // FRAME) - 1, 0)
    last = min(int(block.stop // FRAME) + 2, per_frame.size)
    return np.interp(positions, centres[first:last], per_frame[first:last]).astype(np.float32)


def _mix(pcm: np.ndarray, frames: _Frames, live: list[int], flipped: tuple[int, ...],
         target: float) -> np.ndarray:
    """Every live channel at the same speech level, turned over where flipped, weighted by
    how far each frame stands above the channel's noise floor."""
    above = np.maximum(frames.energy[live] / frames.floor[live, None] - 1.0, 0.0)
    total = above.sum(axis=0)
    weights = np.where(total > 0, above / np.maximum(total, 1e-12), 1.0 / len(live))
    weights = np.stack([_smooth(w) for w in weights])
    out = np.zeros(pcm.shape[1], dtype=np.float32)
    for i, c in enumerate(live):
        gain = target / np.sqrt(frames.level[c]) / _scale(pcm)
        gain = -gain if c in flipped else gain
        for block in _blocks(pcm.shape[1]):
            out[block] += pcm[c, block].astype(np.float32) * np.float32(gain) \
                * _per_sample(weights[i], block)
    return np.clip(out, -1.0, 1.0, out=out)


def _muted(pcm: np.ndarray, frames: _Frames, channel: int, live: list[int],
           target: float) -> np.ndarray:
    """One channel at its speech level, silent where another channel is much louder (it
    picked up that person from afar), across that person's short pauses too; never within
    a few frames of the channel's own speech, so its word edges are kept."""
    normalised = frames.normalised
    others = np.max(normalised[[o for o in live if o != channel]], axis=0)
    dominated = ((normalised[channel] * 10 ** (MUTE_DB / 10) < others)
                 & frames.active[live].any(axis=0))
    mine = frames.active[channel] & ~dominated
    per_second = SAMPLE_RATE / FRAME
    muted = (_shrink(_grow(dominated, int(PAUSE_SECONDS * per_second / 2)),
                     int(PAUSE_SECONDS * per_second / 2))
             & ~_grow(mine, int(EDGE_SECONDS * per_second)))
    out = _normalised(pcm[channel], frames.level[channel], target)
    kept = _smooth((~muted).astype(np.float64), 3)
    for block in _blocks(out.size):
        out[block] *= _per_sample(kept, block)
    return out


def _shrink(mask: np.ndarray, by: int) -> np.ndarray:
    """``mask`` with every run of True shortened by ``by`` frames at both ends."""
    if by <= 0 or not mask.any():
        return mask
    padded = np.concatenate([np.zeros(by, bool), mask, np.zeros(by, bool)])
    return np.lib.stride_tricks.sliding_window_view(padded, 2 * by + 1).all(axis=1)


def _grow(mask: np.ndarray, by: int) -> np.ndarray:
    """``mask`` with every run of True lengthened by ``by`` frames at both ends."""
    return ~_shrink(~mask, by) if by > 0 else mask


def load(path: Path, max_seconds: float = float("inf")) -> tuple[Layout, list[Track]]:
    """Decode a stored recording into the tracks to transcribe (a mono file decodes as
    ``audio.decode`` does).  Refuses what ``audio.decode`` refuses."""
    if audio.probe(path).channels <= 1:
        return Layout(1, "mono"), [Track(audio.decode(path, max_seconds), None)]
    return arrange(audio.decode_channels(path, max_seconds))
