"""Summary benchmark: an hour of Chinese and an hour of English transcript, both models.

    python bench/summary.py [--runs ID,ID+NOTES_ID,ID@CHUNK_CHARS] [--languages zh,en]
                            [--no-compare] [--out bench/results/summary.json] [--resume]

Each (models, language) runs in its own process that also holds the speech models, as the
worker does, so its peak RSS is the appliance's while summarising.  Next to tingji's
summariser (schema-constrained map-reduce with citations; each model alone, and the 1.5B
writing from notes the 0.5B took) the same process measures the first chunk's notes call
through llama-cpp-python's own chat completion, with the same schema and without one
(``--no-compare``: not), and the floor: the transcript read once at the prompt speed
measured on that chunk, and the final summary written once at tingji's generation speed
there.  ``@CHUNK_CHARS`` runs with another ``summary_chunk_chars``.

The transcripts are synthetic: sentences from meeting templates with varied speakers,
topics and figures (no hour of real transcribed speech can be had offline).  About 15,000
characters of Chinese and 9,000 words of English, the length of an hour of talk.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402
from device.records import Segment  # noqa: E402
from device.settings import Settings  # noqa: E402

DEFAULT, SMALL = "qwen2.5-coder-1.5b-instruct-q4_k_m", "qwen2.5-coder-0.5b-instruct"
# Each model alone, and the default writing the summary from notes the small one took.
RUNS = (DEFAULT, SMALL, f"{DEFAULT}+{SMALL}")
TARGETS = {"seconds_per_hour_1_5b_max": 150, "peak_rss_gb_max": 2.5, "ratio_to_floor_max": 1.3}

ZH_PEOPLE = ["王经理", "李娜", "张伟", "刘芳", "陈强", "赵敏", "孙磊", "周静"]
ZH_TOPICS = ["市场预算", "供应商合同", "新产品发布", "客户投诉", "招聘计划", "系统升级",
             "年度审计", "培训安排", "物流成本", "渠道合作"]
ZH_TEMPLATES = [
    "{p}说{t}这个月的进度大概完成了百分之{n}。",
    "关于{t}，我们上个季度一共花了{m}万元，比计划多了一些。",
    "{p}建议把{t}的截止时间推迟到{d}号。",
    "我觉得{t}还有几个问题没有解决，需要跟{q}再确认一下。",
    "{p}负责在{d}号之前把{t}的方案发给大家。",
    "财务那边要求{t}的费用控制在{m}万以内。",
    "大家对{t}还有什么意见吗？没有的话我们就按这个方案执行。",
    "{q}提到客户对{t}的反馈总体是正面的，但是价格偏高。",
    "这个事情我们下周三再开会讨论，请{p}先准备一下数据。",
    "{p}问{t}有没有可能提前完成，{q}说要看人手够不够。",
]
EN_PEOPLE = ["Maria", "David", "Priya", "Tom", "Chen", "Sofia", "Ahmed", "Laura"]
EN_TOPICS = ["the records migration", "the vendor contract", "the budget review",
             "the staff rota", "the new scanner", "patient feedback", "the audit",
             "the training plan", "the network upgrade", "the backup servers"]
EN_TEMPLATES = [
    "{p} said that {t} is about {n} percent done at this point.",
    "On {t}, we spent {m} thousand dollars last quarter, a bit more than planned.",
    "{p} suggested moving the deadline for {t} to the {d}th of next month.",
    "I think there are still a few open questions about {t}; {q} should confirm them.",
    "{p} will send the plan for {t} to everyone before the {d}th.",
    "Finance wants the cost of {t} kept under {m} thousand dollars.",
    "Does anyone have concerns about {t}? If not, we go ahead as proposed.",
    "{q} mentioned that feedback on {t} has been mostly positive, although it is expensive.",
    "Let's come back to this next Wednesday; {p}, could you prepare the numbers?",
    "{p} asked whether {t} could be finished early, and {q} said it depends on staffing.",
]


def transcript(language: str, target_chars: int, seed: int = 11) -> list[Segment]:
    people, topics, templates = ((ZH_PEOPLE, ZH_TOPICS, ZH_TEMPLATES) if language == "zh"
                                 else (EN_PEOPLE, EN_TOPICS, EN_TEMPLATES))
    rng = random.Random(seed)
    segments, total, t = [], 0, 0.0
    while total < target_chars:
        p, q = rng.sample(people, 2)
        text = rng.choice(templates).format(p=p, q=q, t=rng.choice(topics), n=rng.randint(10, 95),
                                            m=rng.randint(5, 300), d=rng.randint(1, 28))
        segments.append(Segment(t, t + 4.0, text, language=language, id=len(segments) + 1))
        total += len(text)
        t += 4.5
    return segments


def run_child(model_id: str, notes_model_id: str | None, language: str,
              compare: bool = True) -> dict:
    from device.jobs import load_engines
    from device.llm import JsonGenerator
    from device.summarize import Plan
    from device.summary_job import load_summarizer, summarize

    settings = Settings.load()
    load_engines(settings)  # the worker keeps the speech models loaded while it summarises
    segments = transcript(language, 15_000 if language == "zh" else 50_000)
    calls = []
    original = JsonGenerator.complete

    def recorded(self, *args, **kwargs):
        completion = original(self, *args, **kwargs)
        calls.append(completion)
        return completion

    JsonGenerator.complete = recorded
    started = time.perf_counter()  # model loading counts: the job loads them too
    summary = summarize(settings, segments, language, model_id, notes_model_id)
    total = time.perf_counter() - started
    JsonGenerator.complete = original
    baseline = least = None  # with a notes model: its summariser's are in its own run
    if notes_model_id is None:
        summarizer = load_summarizer(settings, model_id)
        plan = Plan.of(segments, language)
        baseline = first_chunk(summarizer, plan, compare)
        least = floor(summarizer, plan, baseline, calls)
        least["ratio"] = round(total / least["seconds"], 3)
    prompt_tokens = sum(c.prompt_tokens for c in calls)
    completion_tokens = sum(c.completion_tokens for c in calls)
    return {
        "model": model_id,
        "notes_model": notes_model_id or model_id,
        "characters": sum(len(s.text) for s in segments),
        "segments": len(segments),
        "chunks": summary.chunks,
        "chunk_chars": settings.summary_chunk_chars,
        "calls": [{"seconds": round(c.seconds, 1), "prompt_tokens": c.prompt_tokens,
                   "read_tokens": c.read_tokens, "completion_tokens": c.completion_tokens,
                   "grammar_refusals": c.refusals} for c in calls],
        "total_s": round(total, 1),
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "tokens_per_s_overall": round((prompt_tokens + completion_tokens) / total, 1),
        "generated_tokens_per_s": round(completion_tokens / total, 1),
        "key_points": len(summary.key_points),
        "action_items": len(summary.action_items),
        "grounding_flags": len(summary.flags),
        "flagged": [f"{f.section}[{f.index}] {f.term}: {f.reason}" for f in summary.flags],
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2),
        "first_chunk": baseline,
        "floor": least,
    }


def first_chunk(summarizer, plan, compare: bool = True) -> dict:
    """The first chunk's notes call three ways, each from an empty cache: tingji's (grammar
    asked about the drawn token), llama-cpp-python's chat completion with the same schema
    (grammar over the whole vocabulary for every token), and without a schema (these two
    only if ``compare``); and the time to read its prompt alone."""
    from device.summary_schema import schemas
    from device.summary_text import is_cjk

    llm = summarizer.llm
    chunk = plan.chunks[0]
    schema = schemas(is_cjk(chunk.language))[1]
    user = chunk.prompt + "List this part's key points, decisions and action items as JSON."
    messages = [{"role": "system", "content": chunk.system},
                {"role": "user", "content": user}]
    runs = {}
    llm.reset()
    completion = summarizer.generator.complete(chunk.system, user, schema, 1024)
    runs["tingji"] = {"seconds": round(completion.seconds, 1),
                      "prompt_tokens": completion.prompt_tokens,
                      "completion_tokens": completion.completion_tokens}
    for name, response_format in (("llama_cpp_schema",
                                   {"type": "json_object", "schema": schema}),
                                  ("llama_cpp_plain", None))[:2 * compare]:
        llm.reset()
        started = time.perf_counter()
        result = llm.create_chat_completion(messages=messages, response_format=response_format,
                                            temperature=0.2, max_tokens=1024)
        runs[name] = {"seconds": round(time.perf_counter() - started, 1),
                      "prompt_tokens": result["usage"]["prompt_tokens"],
                      "completion_tokens": result["usage"]["completion_tokens"]}
    llm.reset()
    started = time.perf_counter()
    llm.create_chat_completion(messages=messages, max_tokens=1)
    reading = time.perf_counter() - started
    for run in runs.values():  # the time after reading the prompt, per generated token
        run["ms_per_generated_token"] = round(
            1000 * (run["seconds"] - reading) / max(run["completion_tokens"], 1))
    return {"prompt_seconds": round(reading, 1), "prompt_tokens": runs["tingji"]["prompt_tokens"],
            **runs}


def floor(summarizer, plan, baseline: dict, calls: list) -> dict:
    """The least a summary can take with this model: the transcript's tokens read once at
    the prompt speed measured on the first chunk, and the final summary's tokens written
    at the generation speed measured there (tingji's own generator)."""
    from device.summary_text import _transcript_text

    tokens = summarizer._tokens(_transcript_text(plan.lines))
    reading = baseline["prompt_seconds"] / baseline["prompt_tokens"]
    writing = baseline["tingji"]["ms_per_generated_token"] / 1000
    written = calls[-1].completion_tokens
    return {"transcript_tokens": tokens, "summary_tokens": written,
            "seconds": round(tokens * reading + written * writing, 1)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", default=",".join(RUNS),
                        help="comma-separated: a model id, or MODEL+NOTES_MODEL, each "
                        "optionally @CHUNK_CHARS (the summary_chunk_chars setting)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "summary.json")
    parser.add_argument("--languages", default="zh,en")
    parser.add_argument("--no-compare", dest="compare", action="store_false",
                        help="no llama-cpp-python chat completions beside tingji's")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--resume", action="store_true",
                        help="keep the runs already in --out and do only the missing ones")
    args = parser.parse_args()
    if args.child:
        model_id, notes_model_id, language = args.child
        print(json.dumps(run_child(model_id, notes_model_id if notes_model_id != "-" else None,
                                   language, args.compare)))
        return 0
    results: dict[str, dict] = {}
    if args.resume and args.out.is_file():
        results = json.loads(args.out.read_text())["results"]
    for run in args.runs.split(","):
        models, _, chunk_chars = run.partition("@")
        model_id, _, notes_model_id = models.partition("+")
        env = {**os.environ, "TINGJI_LOG_LEVEL": "ERROR"}
        if chunk_chars:
            env["TINGJI_SUMMARY_CHUNK_CHARS"] = chunk_chars
        for language in args.languages.split(","):
            if language in results.get(run, {}):
                continue
            child = subprocess.run(
                [sys.executable, __file__, "--child", model_id, notes_model_id or "-", language]
                + ([] if args.compare else ["--no-compare"]),
                capture_output=True, text=True, cwd=ROOT, env=env)
            if child.returncode != 0:
                print(child.stderr[-2000:], file=sys.stderr)
                return 1
            result = json.loads(child.stdout.strip().splitlines()[-1])
            results.setdefault(run, {})[language] = result
            write(args.out, results)  # after every run, so a cut-short run still reports
            print(f"{run} {language}: {result['total_s']} s for {result['characters']} "
                  f"characters ({result['chunks']} chunks), {result['generated_tokens_per_s']} "
                  f"generated tok/s, peak RSS {result['peak_rss_gb']} GB", file=sys.stderr)
    write(args.out, results)  # also when --resume found nothing left to run
    print(f"written to {args.out}", file=sys.stderr)
    return 0


def write(out: Path, results: dict) -> None:
    for run, languages in results.items():  # a notes model's run against its summariser's floor
        model_id, _, notes_model_id = run.partition("@")[0].partition("+")
        for language, result in languages.items():
            alone = results.get(model_id, {}).get(language, {}).get("floor")
            if notes_model_id and alone:
                ratio = result["total_s"] / alone["seconds"]
                result["ratio_to_summariser_floor"] = round(ratio, 3)
    report.write(out, {
        **report.header("summary", Settings.load()),
        "transcripts": "synthetic, templated meeting sentences; ~1 hour of talk each",
        "results": results,
        "targets": TARGETS,
    })


if __name__ == "__main__":
    sys.exit(main())
