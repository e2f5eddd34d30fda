"""Transcript exports: TXT, Markdown, SRT, VTT, JSON and DOCX, with speakers and time codes
where the format allows.  They read the stored (latest, edited) transcript.

    >>> from device.records import Segment
    >>> print(srt([Segment(1.5, 3.25, "你好", speaker="A", id=1)]), end="")
    1
    00:00:01,500 --> 00:00:03,250
    A: 你好
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from device.errors import N_
from device.records import Recording, Segment, Summary

Say = Callable[[str], str]
"""Translates a heading (``N_``-marked) into the reader's language."""

FORMATS = {
    "txt": "text/plain; charset=utf-8",
    "md": "text/markdown; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
    "json": "application/json",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}


def timecode(seconds: float, separator: str = ".") -> str:
    """HH:MM:SS.mmm, as subtitles want it (SRT with a comma)."""
    ms = int(round(max(seconds, 0.0) * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{separator}{ms:03d}"


def clock(seconds: float | None) -> str:
    """MM:SS, or H:MM:SS from an hour on: the time a reader scans (pages, TXT, the CLI)."""
    total = int(max(seconds or 0.0, 0.0))
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def segment_record(segment: Segment) -> dict:
    """A segment as the JSON export, the CLI's ``--json`` and the web API write it, with
    the marks of where Whisper was unsure (``device.confidence``)."""
    from device.confidence import segment_unsure, word_unsure

    edited = bool(segment.revision)
    return {"id": segment.id, "start": segment.start, "end": segment.end,
            "speaker": segment.speaker, "text": segment.text, "language": segment.language,
            "revision": segment.revision, "avg_logprob": segment.avg_logprob,
            "no_speech_prob": segment.no_speech_prob, "channel": segment.channel,
            "profile": segment.profile,
            "unsure": segment_unsure(segment),
            "words": [{"start": w.start, "end": w.end, "text": w.text,
                       "probability": w.probability,
                       "unsure": not edited and word_unsure(w.probability)}
                      for w in segment.words]}


def transcript_record(recording: Recording, segments: Sequence[Segment],
                      summary: Summary | None = None) -> dict:
    """A recording with its transcript (and summary) as one JSON document."""
    return {
        "recording": {"id": recording.id, "title": recording.title,
                      "created": recording.created, "duration": recording.duration,
                      "language": recording.language, "profile": recording.profile,
                      "model": recording.model_id,
                      "language_probabilities": recording.language_probabilities,
                      "channel_layout": recording.channel_layout},
        "segments": [segment_record(s) for s in segments],
        "summary": summary.content if summary else None,
    }


@dataclass(frozen=True)
class Citation:
    """Cited segments as a reader finds them: their numbers in the recording (a run of
    consecutive ones as one) and the time the first starts."""

    first: int
    last: int
    start: float
    segment_id: int
    """The first cited segment's id."""
    segment_ids: tuple[int, ...]

    @property
    def label(self) -> str:
        numbers = f"#{self.first}" if self.first == self.last else f"#{self.first}–{self.last}"
        return f"{numbers} {clock(self.start)}"


def citations(segment_ids: Sequence[int], segments: Sequence[Segment]) -> list[Citation]:
    """The cited ids (in any order; ids not in ``segments`` left out) as runs of
    consecutive segment numbers."""
    number = {s.id: n for n, s in enumerate(segments, 1)}
    numbers = sorted({number[i] for i in segment_ids if i in number})
    runs: list[Citation] = []
    for n in numbers:
        segment = segments[n - 1]
        if runs and runs[-1].last == n - 1:
            runs[-1] = replace(runs[-1], last=n, segment_ids=(*runs[-1].segment_ids, segment.id))
        else:
            runs.append(Citation(n, n, segment.start, segment.id, (segment.id,)))
    return runs


def summary_points(summary: Summary, segments: Sequence[Segment],
                   say: Say = str) -> list[tuple[str, list[str]]]:
    """The summary's sections as (heading, lines), each point with its citations
    ("[#12 03:41]") and flags: what the TXT, Markdown and DOCX exports write."""
    content = summary.content
    sections = []
    for key, title in (("key_points", say(N_("Key points"))), ("decisions", say(N_("Decisions"))),
                       ("action_items", say(N_("Action items")))):
        lines = []
        for index, item in enumerate(content.get(key) or []):
            text = _action(item) if key == "action_items" else _item_text(item)
            cited = item.get("segments") if isinstance(item, dict) else None
            marks = "".join(f" [{c.label}]" for c in citations(cited or [], segments))
            flags = "".join(f" (⚠ {f['term'] or f['reason']})" for f in summary.flags
                            if f["section"] == key and f["index"] == index)
            lines.append(f"{text}{marks}{flags}")
        if lines:
            sections.append((title, lines))
    left_out = content.get("unsupported") or []
    if left_out:
        sections.append((say(N_("Left out: not said in the transcript")),
                         [str(u.get("text", "")) for u in left_out]))
    return sections


def summary_text(summary: Summary) -> str:
    """The summary paragraph, with the check's warning about it when there is one."""
    warnings = [f"(⚠ {f['reason']})" for f in summary.flags if f["section"] == "summary"]
    return " ".join([str(summary.content.get("summary", "")), *warnings])


def summary_markdown(summary: Summary, segments: Sequence[Segment], level: int = 2,
                     say: Say = str) -> str:
    """The summary in Markdown, each point with its citations and flags (the Markdown
    export and ``python -m device summarize``)."""
    mark = "#" * level
    out = [f"{mark} {say(N_('Summary'))}", "", summary_text(summary), ""]
    for title, lines in summary_points(summary, segments, say):
        out += [f"{mark}# {title}", ""] + [f"- {line}" for line in lines] + [""]
    return "\n".join(out)


_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_safe(text: str) -> str:
    """Text DOCX (XML 1.0) can hold: a stored vertical tab made the export fail before."""
    return _NOT_XML.sub("", text)


def _line(segment: Segment) -> str:
    return f"{segment.speaker}: {segment.text}" if segment.speaker else segment.text


def txt(recording: Recording, segments: Sequence[Segment],
        summary: Summary | None = None, say: Say = str) -> str:
    lines = [recording.title, ""]
    if summary:
        lines += [say(N_("Summary")), "", summary_text(summary), ""]
        for title, points in summary_points(summary, segments, say):
            lines += [title] + [f"- {p}" for p in points] + [""]
        lines += [say(N_("Transcript")), ""]
    lines += [f"[#{n} {clock(s.start)}] {_line(s)}" for n, s in enumerate(segments, 1)]
    return "\n".join(lines) + "\n"


def markdown(recording: Recording, segments: Sequence[Segment],
             summary: Summary | None = None, say: Say = str) -> str:
    out = [f"# {recording.title}", ""]
    facts = [f"{recording.created[:10]}"]
    if recording.duration:
        facts.append(clock(recording.duration))
    if recording.language:
        facts.append(recording.language)
    out += ["*" + " · ".join(facts) + "*", ""]
    if summary:
        out.append(summary_markdown(summary, segments, say=say))
    out += [f"## {say(N_('Transcript'))}", ""]
    for n, s in enumerate(segments, 1):
        who = f"**{s.speaker}** " if s.speaker else ""
        out.append(f"`#{n} {clock(s.start)}` {who}{s.text}  ")
    return "\n".join(out) + "\n"


def _item_text(item) -> str:
    return item.get("text", "") if isinstance(item, dict) else str(item)


def _action(item: dict) -> str:
    parts = [item.get("what", "")]
    if item.get("owner"):
        parts.append(f"({item['owner']})")
    if item.get("due"):
        parts.append(f"— {item['due']}")
    return " ".join(parts)


def srt(segments: Sequence[Segment]) -> str:
    blocks = [f"{n}\n{timecode(s.start, ',')} --> {timecode(s.end, ',')}\n{_line(s)}\n"
              for n, s in enumerate(segments, 1)]
    return "\n".join(blocks)


def vtt(segments: Sequence[Segment]) -> str:
    blocks = ["WEBVTT\n"]
    for s in segments:
        text = s.text.replace("-->", "→")
        voice = f"<v {s.speaker}>" if s.speaker else ""
        blocks.append(f"{timecode(s.start)} --> {timecode(s.end)}\n{voice}{text}\n")
    return "\n".join(blocks)


def as_json(recording: Recording, segments: Sequence[Segment],
            summary: Summary | None = None) -> str:
    return json.dumps(transcript_record(recording, segments, summary), ensure_ascii=False,
                      indent=2)


def docx(recording: Recording, segments: Sequence[Segment],
         summary: Summary | None = None, say: Say = str) -> bytes:
    from docx import Document
    from docx.shared import Pt, RGBColor

    document = Document()
    document.add_heading(_xml_safe(recording.title), level=1)
    document.add_paragraph(recording.created[:10] + (
        f" · {clock(recording.duration)}" if recording.duration else ""))
    if summary:
        document.add_heading(say(N_("Summary")), level=2)
        document.add_paragraph(_xml_safe(summary_text(summary)))
        for title, lines in summary_points(summary, segments, say):
            document.add_heading(title, level=3)
            for line in lines:
                document.add_paragraph(_xml_safe(line), style="List Bullet")
    document.add_heading(say(N_("Transcript")), level=2)
    for n, s in enumerate(segments, 1):
        paragraph = document.add_paragraph()
        stamp = paragraph.add_run(f"[#{n} {clock(s.start)}] ")
        stamp.font.color.rgb = RGBColor(0x66, 0x66, 0x66)
        stamp.font.size = Pt(9)
        if s.speaker:
            paragraph.add_run(_xml_safe(f"{s.speaker}: ")).bold = True
        paragraph.add_run(_xml_safe(s.text))
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def export(fmt: str, recording: Recording, segments: Sequence[Segment],
           summary: Summary | None = None, say: Say = str) -> bytes:
    """The transcript in ``fmt`` (one of FORMATS) as bytes; ``say`` translates the headings
    (the web passes the reader's language; English otherwise)."""
    if fmt == "txt":
        return txt(recording, segments, summary, say).encode()
    if fmt == "md":
        return markdown(recording, segments, summary, say).encode()
    if fmt == "srt":
        return srt(segments).encode()
    if fmt == "vtt":
        return vtt(segments).encode()
    if fmt == "json":
        return as_json(recording, segments, summary).encode()
    if fmt == "docx":
        return docx(recording, segments, summary, say)
    raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
