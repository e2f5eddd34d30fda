"""Summaries a reviewer can trust: a local LLM (llama.cpp), schema-constrained JSON, grounded.

A transcript that fits one call is summarised in one call.  A longer one is cut at segment
boundaries into chunks of about ``summary_chunk_chars`` characters; each chunk gives short
notes (map: key points, decisions and action items, each citing the transcript lines it comes
from), and one final call writes the summary from all the notes (reduce; notes too long for
it are first merged in groups).

Nothing the model writes is shown unchecked (``device.faithfulness``): a call whose answer
loops, copies one field into the others or cites every line is stopped or written again
with repetition penalties (an answer whose only fault is items copying the items before
them is taken without the copies), and a summary that stays degenerate is not stored
(UnreliableSummary: the page says there is no reliable summary, and why).  Each point is
scored against the lines it cites: cited elsewhere than where the transcript says it, it is
re-cited; said nowhere, it is left out (and listed apart); partly said, it is flagged, as
is every number or name the cited segments do not contain.

The model sees the transcript as numbered lines, "[12]text", each holding a few consecutive
segments of one speaker, and cites line numbers; they are turned into the ids of the lines'
segments at the end.  Store ids grow with the library (five or more digits) where line
numbers stay short, and Qwen spells numbers digit by digit: with a line per segment the
numbers were a fifth of the prompt, and prompt reading is most of the time on a small board.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from device.errors import N_, TingjiError
from device.faithfulness import check_claims, degeneracy, loop_at_end, mend
from device.grounding import Flag, grounding_flags
from device.llm import SEED, JsonGenerator, ReadPrompt, RepetitionLoop, Sampling
from device.records import Segment
from device.said import Said, of_error
from device.summary_schema import schemas
from device.summary_text import (
    Chunk,
    NotesMemo,
    Plan,
    _notes_text,
    _transcript_text,
    is_cjk,
    notes_so_far,
    speakers_of,
    unattributed,
)

log = logging.getLogger("tingji.summarize")

PROMPT_VERSION = "summary-v7"
SUMMARY_TOKENS = 2048
"""The summary's answer at most."""
BESIDE_NOTES = 1644
"""Tokens the final call reads beside its notes at most: its instructions (~200) and, after
notes taken during a recording, the recording's last part (a chunk of ``notes_chunk_chars``:
~1,000)."""
MERGE_GROUP = 6
"""Notes merged into one at a time."""
PICKED_MAX = 12
"""Lines the model may pick as carrying a transcript's (or a chunk's) content."""
_PICK_SCHEMA = {"type": "object",
                "properties": {"lines": {"type": "array", "maxItems": PICKED_MAX,
                                         "items": {"type": "integer"}}},
                "required": ["lines"]}
_PICK_REQUEST = ("Which of these lines carry the content (what was said, decided or asked "
                 "for)? List their [numbers] as JSON.")


class SummaryError(TingjiError):
    pass


class UnreliableSummary(SummaryError):
    """Every try gave degenerate output, or no claim the transcript supports: nothing is
    stored, and the page says there is no reliable summary, and why."""


TRIES = (Sampling(),
         Sampling(temperature=0.6, repeat_penalty=1.3, presence_penalty=0.3, seed=SEED + 1))
"""The likeliest text first; after a loop or a degenerate answer, penalties on repeated
tokens and freer drawing."""


@dataclass(frozen=True)
class Summary:
    title: str
    summary: str
    key_points: list[dict]
    decisions: list[dict]
    action_items: list[dict]
    keywords: list[str]
    language: str
    model_id: str
    prompt_version: str = PROMPT_VERSION
    flags: list[Flag] = field(default_factory=list)
    chunks: int = 1
    notes_model_id: str | None = None
    """The model that read a long transcript into notes, when not ``model_id`` itself."""
    unsupported: list[dict] = field(default_factory=list)
    """Claims left out because the transcript does not say them (shown apart)."""
    retries: int = 0
    """Calls made again after degenerate output."""
    checked: dict = field(default_factory=dict)
    """What the claim check did: claims written, re-cited, left out, flagged as weak."""
    notes_kept: int = 0
    """Chunks whose notes were taken before (during the recording, or an earlier summary)."""
    read_ahead: int = 0
    """Tokens of the final call's prompt read into the model during the recording."""

    def as_dict(self) -> dict:
        return asdict(self)


class Summarizer(Protocol):
    model_id: str

    def summarize(self, segments: Sequence[Segment], language: str | None,
                  on_progress: Callable[..., None] = ...) -> Summary: ...


# -- llama.cpp -----------------------------------------------------------------------------


class LlamaSummarizer:
    """A GGUF model through llama-cpp-python, loaded on creation; ``close()`` frees it."""

    def __init__(self, model_path: Path, model_id: str, threads: int, context: int = 8192,
                 lazy: bool = False, budget: int | None = None):
        """``lazy``: loaded on first use (notes all taken before need no model).
        ``budget``: tokens of notes the final call reads at most (``notes_budget``), by
        default of this model's ``context``."""
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise SummaryError("llama-cpp-python is not installed: run `make install`") from exc
        self.model_id = model_id
        self.budget = notes_budget(context) if budget is None else budget
        # Read, not mapped: llama.cpp repacks the weights for this CPU's kernels into memory
        # of its own, and a mapped file's pages, read once to repack, stayed resident
        # beside them (the 1.5B: 1,861 MB after loading against 1,270 MB read; loading
        # takes 0.6 s longer, reading and writing as fast).
        self._load = lambda: Llama(model_path=str(model_path), n_ctx=context,
                                   n_threads=threads, n_batch=512, flash_attn=True,
                                   use_mmap=False, verbose=False)
        self._llm = self._generator = None
        if not lazy:
            self._loaded()

    def _loaded(self) -> None:
        """Load the model now if it is not yet."""
        if self._llm is not None:
            return
        try:
            # Flash attention: ~5 % faster prompt reading on CPU, measured.
            self._llm = self._load()
        except (ValueError, RuntimeError) as exc:
            raise SummaryError(f"model {self.model_id} could not be loaded ({exc}): run "
                               f"`python -m models install {self.model_id} --force`") from exc
        try:
            self._generator = JsonGenerator(self._llm)
        except ValueError as exc:
            raise SummaryError(f"model {self.model_id} cannot be used for summaries "
                               f"({exc})") from exc

    @property
    def llm(self):
        """The model (loaded on first use)."""
        self._loaded()
        return self._llm

    @property
    def generator(self) -> JsonGenerator:
        """The model's schema-constrained completions (loaded on first use)."""
        self._loaded()
        return self._generator

    def close(self) -> None:
        """Free the model now: the summariser may be loaded next, and both together would
        pass the memory budget."""
        if self._llm is not None:
            self._generator.close()
            self._llm.close()
            self._llm = self._generator = None

    def _complete(self, plan: Plan, user: str, max_tokens: int, schema: dict,
                  lines: int, system: str | None = None, mending: bool = False) -> dict:
        """One call's JSON, written again with other sampling when it is degenerate
        (``lines``: how many numbered lines it may cite) and, ``mending`` (the summary
        itself), ``mend`` cannot mend it; UnreliableSummary when every try is.  Answers
        usually take about a quarter of ``max_tokens``.  Notes are not mended: on the hour
        of Chinese, the first chunk's copied answer taken without its copies made notes
        from which the summary came out with 2 key points and 4 flagged claims instead
        of 6 and none (docs/benchmarks.md)."""
        reason = ""
        for attempt, sampling in enumerate(TRIES):
            if attempt:
                plan.calls += 1
                plan.retries += 1
                plan.step()  # the failed try
                plan.retrying = True
            try:
                completion = self.generator.complete(system or plan.system, user, schema,
                                                     max_tokens,
                                                     on_step=plan.within, sampling=sampling,
                                                     looping=loop_at_end,
                                                     expected_tokens=max_tokens // 4)
            except RepetitionLoop as exc:
                reason = of_error(exc)
                continue
            except ValueError as exc:
                raise SummaryError(str(exc)) from exc
            log.info("%s: read %d of the prompt's %d tokens and wrote %d in %.1f s%s",
                     self.model_id, completion.read_tokens, completion.prompt_tokens,
                     completion.completion_tokens, completion.seconds,
                     " (written again)" if attempt else "")
            try:
                # strict=False: the grammar lets a raw newline or tab into a string.
                answer = json.loads(completion.text, strict=False)
            except json.JSONDecodeError as exc:
                reason = Said(N_("the model returned invalid JSON (%(error)s)"), error=str(exc))
                continue
            answer, copies, reason = (mend(answer, lines) if mending
                                      else (answer, 0, degeneracy(answer, lines)))
            if reason is None:
                plan.copies_dropped += copies
                return answer
        raise UnreliableSummary(N_("no reliable summary: %(reason)s (tried %(num)d times)"),
                                reason=reason, num=len(TRIES))

    def _tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False))

    def summarize(self, segments: Sequence[Segment], language: str | None,
                  on_progress: Callable[..., None] = lambda p, stage=None: None,
                  extract: bool = True) -> Summary:
        """The whole schedule with this one model."""
        plan = Plan.of(segments, language, on_progress, extract)
        return self.write(plan, self.take_notes(plan) if plan.long else None)

    def take_notes(self, plan: Plan, memo: NotesMemo | None = None) -> list[dict]:
        """Map: notes per chunk (those ``memo`` keeps are taken from it, the others kept in
        it); then notes too long for the final call merged in groups."""
        notes = []
        first = 1
        for index, chunk in enumerate(plan.chunks):
            key = chunk.key(self.model_id, PROMPT_VERSION, plan.extract)
            noted = memo.get(key) if memo is not None else None
            if noted is None:
                noted = self.chunk_notes(plan, chunk, Said(N_("part %(num)d of %(total)d"),
                                                           num=index + 1,
                                                           total=len(plan.chunks)))
                if memo is not None:
                    memo.put(key, chunk, noted, self.model_id)
            else:
                plan.kept += 1
                plan.done += 1 + plan.extract
            notes.append(chunk.cited(noted, first))
            first += len(chunk.lines)
        return self.merged(plan, notes, memo)

    def merged(self, plan: Plan, notes: list[dict], memo: NotesMemo | None = None,
               ahead: bool = False) -> list[dict]:
        """Notes too long for the final call (``self.budget``) merged, a group of
        ``MERGE_GROUP`` at a time, the earliest first (``next_merge``), until they fit;
        merged notes ``memo`` keeps are not merged again.  Which groups are merged depends
        only on the notes before them, so notes merged during a recording (``ahead``: the
        notes so far, merged only where more notes cannot change which) are the ones the
        summary merges after stop.  Who said the lines they cite is left out of what is
        merged: it is known only once the whole recording is diarised (merged notes never
        carried it; after notes taken during a recording the final call is told)."""
        notes, levels = list(notes), [0] * len(notes)
        while len(notes) > 1 and self._tokens(_notes_text(notes)) > self.budget:
            span = next_merge(levels)
            if span is None and ahead:
                break
            start, end = span or (0, min(MERGE_GROUP, len(notes)))
            group = [unattributed(note) for note in notes[start:end]]
            key = hashlib.sha256(json.dumps([self.model_id, PROMPT_VERSION, "merged", group],
                                            ensure_ascii=False).encode()).hexdigest()
            merged = memo.get(key) if memo is not None else None
            if merged is None:
                plan.calls += 1
                plan.starting(Said(N_("reading the notes")), Said(N_("merging the notes")))
                merged = self._complete(
                    plan, "Notes on consecutive parts of one transcript, as JSON. "
                    "Merge them into one set of notes, keeping each item's segments:\n"
                    + _notes_text(group), max_tokens=1024, schema=plan.notes_schema,
                    lines=len(plan.lines))
                plan.step()
                if memo is not None:
                    memo.put_merged(key, merged, self.model_id)
            notes[start:end] = [merged]
            levels[start:end] = [max(levels[start:end]) + 1]
        return notes

    def chunk_notes(self, plan: Plan, chunk: Chunk, part: str) -> dict:
        """A chunk's notes (key points, decisions, action items), citing its own lines."""
        numbers = range(1, len(chunk.lines) + 1)
        picked = self._pick(plan, chunk.prompt, numbers,
                            Said(N_("picking the lines that carry %(part)s"), part=part),
                            chunk.system)
        plan.starting(Said(N_("reading %(part)s"), part=part),
                      Said(N_("writing notes on %(part)s"), part=part))
        notes = self._complete(
            plan, chunk.prompt + _picks(picked)
            + "List this part's key points, decisions and action items as JSON.",
            max_tokens=1024, schema=schemas(is_cjk(chunk.language))[1], lines=len(numbers),
            system=chunk.system)
        plan.step()
        return notes

    def _pick(self, plan: Plan, text: str, numbers: range, stage: str,
              system: str | None = None) -> list[int]:
        """Extract before abstracting: the lines (of ``numbers``) the model says carry the
        content of ``text``, for the next call to write from; none when the plan does not
        extract.  The next call's prompt starts with the same text, so it reads only what
        follows it."""
        if not plan.extract:
            return []
        plan.starting(Said(N_("reading the transcript")), stage)
        try:
            answer = self._complete(plan, text + _PICK_REQUEST, max_tokens=96,
                                    schema=_PICK_SCHEMA, lines=len(numbers), system=system)
        except UnreliableSummary:
            answer = {}  # the points are then written from the whole text
        plan.step()
        return sorted({n for n in answer.get("lines", []) if isinstance(n, int) and n in numbers})

    def read_ahead(self, plan: Plan, notes: list[dict],
                   last: Callable[[], ReadPrompt | None] = lambda: None) -> ReadPrompt | None:
        """The final call's start, the notes so far (``notes_so_far``), read into the
        model from where the last reading (``last()``, by this model) ended; None when it
        does not fit the model's context.  One state at a time is held in memory."""
        tokens = self.generator.prompt_start(plan.system, notes_so_far(notes))
        if len(tokens) >= self.llm.n_ctx():
            return None
        if (before := last()) is not None:
            self.generator.restore(before)
            del before
        self.generator.read(tokens)
        return self.generator.saved()

    def write(self, plan: Plan, notes: list[dict] | None,
              notes_model_id: str | None = None, ahead: ReadPrompt | None = None) -> Summary:
        """The summary: from the transcript itself when it fits one call, else from notes
        (``ahead``: the start of the call after notes taken during the recording, read into
        this model then)."""
        plan.starting(Said(N_("reading the notes")), Said(N_("writing the summary")))
        if notes is None:
            text = "Transcript:\n" + _transcript_text(plan.lines) + "\n\n"
            picked = self._pick(plan, text, range(1, len(plan.lines) + 1),
                                Said(N_("picking the lines that carry the content")))
            plan.starting(Said(N_("reading the transcript")), Said(N_("writing the summary")))
            merged = self._complete(plan, text + _picks(picked) + "Summarise it as JSON.",
                                    max_tokens=SUMMARY_TOKENS, schema=plan.summary_schema,
                                    lines=len(plan.lines), mending=True)
        elif plan.tail:
            first = len(plan.lines) - len(plan.tail) + 1
            user = (notes_so_far(notes) + speakers_of(notes, plan.lines) + "\nIts last part:\n"
                    + _transcript_text(plan.tail, first) + "\n\nWrite the summary of the whole "
                    "transcript as JSON: every item keeps the segments of the notes it comes "
                    "from, or lists the [numbers] of the last part's lines it comes from.")
            if ahead is not None and self.generator.restore(ahead):
                plan.read_ahead = ahead.shared(self.generator.prompt(plan.system, user))
            merged = self._complete(plan, user, max_tokens=SUMMARY_TOKENS,
                                    schema=plan.summary_schema, lines=len(plan.lines),
                                    mending=True)
        else:
            merged = self._complete(
                plan, "Notes on the consecutive parts of one transcript, as JSON. Write "
                "the summary of the whole transcript as JSON, keeping each item's segments:\n"
                + _notes_text(notes), max_tokens=SUMMARY_TOKENS, schema=plan.summary_schema,
                lines=len(plan.lines), mending=True)
        plan.step()
        plan.on_progress(100.0, Said(N_("checking the summary against the transcript")))
        lines = plan.lines
        checked = check_claims(merged, [line.text for line in lines])
        if not any(checked.summary.get(k) for k in ("key_points", "decisions", "action_items")):
            raise UnreliableSummary(N_(
                "no reliable summary: none of its points is said in the transcript lines it "
                "cites or in any other (%(num)d left out)"), num=len(checked.unsupported))
        merged = checked.summary
        for section in ("key_points", "decisions", "action_items"):
            for item in merged.get(section, []):
                item["segments"] = list(dict.fromkeys(
                    s.id for n in item["segments"] for s in lines[n - 1].segments))
        segments = plan.segments
        flags = grounding_flags(merged, segments)
        return Summary(
            title=merged.get("title", ""), summary=merged.get("summary", ""),
            key_points=merged.get("key_points", []), decisions=merged.get("decisions", []),
            action_items=merged.get("action_items", []), keywords=merged.get("keywords", []),
            language=plan.language or merged.get("language", ""), model_id=self.model_id,
            flags=flags, chunks=len(plan.chunks) + bool(plan.tail),
            notes_model_id=notes_model_id,
            unsupported=checked.unsupported, retries=plan.retries, notes_kept=plan.kept,
            read_ahead=plan.read_ahead,
            checked={"claims": checked.claims, "recited": checked.recited,
                     "left_out": len(checked.unsupported), "weak": len(checked.weak),
                     "copies_dropped": plan.copies_dropped},
        )


def notes_budget(context: int) -> int:
    """Tokens of notes the final call reads at most in a summariser's ``context`` (4,500
    in the default ``llm_context`` of 8,192); more are first merged in groups."""
    return context - SUMMARY_TOKENS - BESIDE_NOTES


def next_merge(levels: Sequence[int]) -> tuple[int, int] | None:
    """Which notes to merge next (``start``, ``end``), given how many merges each of them
    is of: the earliest ``MERGE_GROUP`` in a row merged as often; None if no such run.
    It depends only on the notes before ``end``: on a list of notes that has grown since,
    the same merges come first.

    >>> next_merge([1, 0, 0, 0, 0, 0, 0, 0])
    (1, 7)
    >>> next_merge([2, 1, 1, 0, 0]) is None
    True
    """
    for start in range(len(levels) - MERGE_GROUP + 1):
        if len(set(levels[start : start + MERGE_GROUP])) == 1:
            return start, start + MERGE_GROUP
    return None


def _picks(picked: list[int]) -> str:
    if not picked:
        return ""
    return ("The lines that carry its content: " + ", ".join(f"[{n}]" for n in picked)
            + ". Write every key point, decision and action item from these lines, quoting "
            "or closely paraphrasing them, and cite them.\n")
