"""A picture of a recording: where there is speech, who speaks, markers, search hits and the
passages the recogniser was unsure of, as spans on a strip drawn in SVG by the templates.

Positions are in thousandths of the recording (``x`` 0-1000), so the strip scales with the
page; times stay in seconds for the player.

    >>> from device.records import Segment
    >>> s = strip(20.0, [Segment(0, 5, "你好", speaker="说话人1"),
    ...                   Segment(10, 12, "好", speaker="说话人2")])
    >>> [(lane.name, lane.colour, [(sp.x, sp.width) for sp in lane.spans]) for lane in s.lanes]
    [('说话人1', 0, [(0.0, 250.0)]), ('说话人2', 1, [(500.0, 100.0)])]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from markupsafe import Markup

from device.confidence import segment_unsure
from device.records import Marker, Segment
from device.text import fold

WIDTH = 1000.0
LEAST = 1.5
"""The narrowest span drawn (in thousandths): a short word stays visible on a long
recording."""


@dataclass(frozen=True)
class Span:
    x: float
    width: float
    start: float
    unsure: bool = False


@dataclass(frozen=True)
class Lane:
    name: str
    """The speaker, or "" for speech of no named speaker."""
    colour: int
    seconds: float
    spans: list[Span] = field(default_factory=list)


@dataclass(frozen=True)
class Strip:
    duration: float
    lanes: list[Lane]
    markers: list[tuple[float, float, str]]
    """(x, seconds, note)."""
    hits: list[tuple[float, float]]
    """(x, seconds) of the segments holding the searched text."""
    unsure: int

    @property
    def height(self) -> int:
        return 8 + 12 * max(len(self.lanes), 1)


def _x(t: float, duration: float) -> float:
    return round(min(max(t / duration, 0.0), 1.0) * WIDTH, 1)


def _width(start: float, end: float, duration: float) -> float:
    return round(max((min(end, duration) - max(start, 0.0)) / duration * WIDTH, LEAST), 1)


def strip(duration: float | None, segments: Sequence[Segment],
          markers: Iterable[Marker] = (), query: str = "") -> Strip:
    """The strip of a recording: a lane per speaker (in order of first appearance, colours
    as the transcript's), or one lane of speech before anyone is named."""
    end = max([duration or 0.0, *(s.end for s in segments)]) or 1.0
    spans: dict[str, list[Span]] = {}
    seconds: dict[str, float] = {}
    for segment in segments:
        name = segment.speaker or ""
        x = _x(segment.start, end)
        width = _width(segment.start, segment.end, end)
        spans.setdefault(name, []).append(Span(x, width, segment.start,
                                               segment_unsure(segment)))
        seconds[name] = seconds.get(name, 0.0) + max(segment.end - segment.start, 0.0)
    named = [n for n in spans if n]
    lanes = {name: Lane(name, named.index(name) % 8 if name else -1, seconds[name],
                        spans[name]) for name in spans}
    needle = fold(query.strip())
    hits = [(_x(s.start, end), s.start) for s in segments
            if needle and needle in fold(s.text)]
    ordered = [lane for name, lane in lanes.items() if name] + \
        ([lanes[""]] if "" in lanes else [])
    return Strip(end, ordered, [(_x(m.t, end), m.t, m.note) for m in markers], hits,
                 sum(span.unsure for lane in ordered for span in lane.spans))


def speech_strip(duration: float | None, spans: Sequence[tuple[float, float, str | None]]
                 ) -> Strip:
    """A small strip for the library: one lane, each span coloured by its speaker; spans of
    a colour closer than ``MINI_GAP`` are drawn as one."""
    end = max([duration or 0.0, *(e for _, e, _ in spans)]) or 1.0
    gap = MINI_GAP / WIDTH * end
    colours: dict[str, int] = {}
    runs: dict[int, list[list[float]]] = {}
    for start, stop, speaker in sorted(spans, key=lambda span: span[0]):
        if speaker and speaker not in colours:
            colours[speaker] = len(colours) % 8
        lane = runs.setdefault(colours.get(speaker or "", -1), [])
        if lane and start - lane[-1][1] < gap:
            lane[-1][1] = max(lane[-1][1], stop)
        else:
            lane.append([start, stop])
    lanes = [Lane(str(colour), colour, 0.0,
                  [Span(_x(a, end), _width(a, b, end), a) for a, b in runs[colour]])
             for colour in sorted(runs)]
    return Strip(end, lanes, [], [], 0)


def mini_lanes(strip: Strip) -> Markup:
    """A small strip's lanes as SVG, for the library page to wrap: drawn here rather than by
    the template (fifty of them a page), from numbers alone."""
    return Markup("".join(
        f'<g class="lane speaker-{int(lane.colour)}">' + "".join(
            f'<rect x="{float(s.x)}" y="1" width="{float(s.width)}" height="8"></rect>'
            for s in lane.spans) + "</g>" for lane in strip.lanes))


MINI_GAP = 5.0
"""Spans of the library's small strip (10rem, ~160 px for 1000) closer than this are drawn
as one: a pause under a pixel wide is not seen, and a rectangle per segment made the
library page six times larger and slower."""
