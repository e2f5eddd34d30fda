"""Degenerate summaries and claims their citations do not support (no model; the summariser
that uses these checks runs in tests/test_summarize.py)."""

from __future__ import annotations

import json
from pathlib import Path

from device.faithfulness import (
    SUPPORTED,
    UNSUPPORTED,
    best_lines,
    check_claims,
    degeneracy,
    loop_at_end,
    looping,
    mend,
    source_units,
    support,
)

FIXTURES = Path(__file__).parent / "fixtures"


def _lines(name: str) -> list[str]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))["segments"]


def _honest_zh() -> dict:
    return {
        "title": "第三季度市场预算会议",
        "summary": "会议回顾了上季度超支的情况，决定削减线下活动预算，并安排了后续工作。",
        "key_points": [{"text": "上季度花了120万，超支8%", "segments": [3]},
                       {"text": "财务要求第三季度总预算不超过100万", "segments": [6]}],
        "decisions": [{"text": "线下活动预算从三十万减到二十万", "segments": [7, 9]}],
        "action_items": [{"what": "提交短视频投放的详细计划", "owner": "李娜",
                          "due": "7月15日", "segments": [10]}],
        "keywords": ["预算", "短视频", "线下活动"], "language": "zh",
    }


def test_an_honest_summary_is_neither_degenerate_nor_changed():
    lines = _lines("meeting_zh.json")
    summary = _honest_zh()
    assert degeneracy(summary, len(lines)) is None
    checked = check_claims(summary, lines)
    assert checked.unsupported == [] and checked.weak == [] and checked.recited == 0
    assert checked.claims == 4
    assert checked.summary["key_points"] == summary["key_points"]


def test_the_loop_a_reviewer_was_shown_is_degenerate():
    """The 6-minute recording: one phrase of the first segment through every field, each
    point citing every line, the keywords two words four times."""
    phrase = "冰海星區防" * 60
    everything = list(range(1, 7))
    summary = {"title": phrase[:40], "summary": phrase,
               "key_points": [{"text": phrase[:50], "segments": everything}] * 4,
               "decisions": [{"text": phrase[:50], "segments": everything}],
               "action_items": [{"what": phrase[:50], "owner": "", "due": "",
                                 "segments": everything}],
               "keywords": ["冰海", "星區"] * 4, "language": "zh"}
    assert "repeats itself" in degeneracy(summary, 6)
    # each other sign is caught on its own too
    copied = {**_honest_zh(), "summary": "上个季度的预算超支了百分之八",
              "key_points": [{"text": "上个季度的预算超支了百分之八", "segments": [3]}],
              "decisions": [{"text": "上个季度的预算超支了百分之八。", "segments": [3]}]}
    assert degeneracy(copied, 12) == "the same text was copied into several fields"
    # ...but a two-line transcript's line may be its summary and its key point too
    short = {"title": "开放时间", "summary": "开放时间早上9点至下午5点",
             "key_points": [{"text": "开放时间早上9点至下午5点", "segments": [1]}],
             "decisions": [], "action_items": [], "keywords": ["开放时间"]}
    assert degeneracy(short, 2) is None
    cites_all = {**_honest_zh(), "key_points": [
        {"text": t, "segments": everything} for t in ("上季度超支", "线上广告超支", "预算上限")],
        "decisions": [], "action_items": []}
    assert degeneracy(cites_all, 6) == "every point cites the whole transcript"
    repeated_keywords = {**_honest_zh(), "keywords": ["预算", "会议"] * 4}
    assert degeneracy(repeated_keywords, 12) == "the keywords repeat each other"


def test_items_copying_the_key_points_are_dropped_when_that_is_all_that_was_wrong():
    """The 1.5B's answer on a 20-minute recording: its four key points copied word for word
    into the decisions and the action items, written again (~30 s) before this."""
    copied = json.loads((FIXTURES / "copied_summary_en.json").read_text(encoding="utf-8"))
    assert degeneracy(copied, 100) == "the same words fill every field"
    mended, dropped, reason = mend(copied, 100)
    assert (reason, dropped) == (None, 8)
    assert mended["key_points"] == copied["key_points"]
    assert mended["decisions"] == mended["action_items"] == []
    assert mended["summary"] == copied["summary"] and copied["decisions"]  # not changed
    # a summary shown as written keeps its one copy
    honest = _honest_zh()
    once = {**honest, "decisions": [*honest["decisions"], dict(honest["key_points"][0])]}
    assert mend(once, 12) == (once, 0, None)
    # and a loop is not mended
    loop = {**honest, "summary": "冰海星區防" * 60}
    assert mend(loop, 12) == (loop, 0, degeneracy(loop, 12)) and degeneracy(loop, 12)


def test_loops_are_told_from_language():
    assert looping("冰海星區防" * 12)
    assert looping("the device records the voice " * 8)
    for line in _lines("meeting_zh.json") + _lines("meeting_en.json"):
        assert not looping(line)
    assert not looping("".join(_lines("meeting_zh.json")))
    assert not looping(" ".join(_lines("meeting_en.json")))
    # while generating: the end of the text so far
    assert loop_at_end('{"title": "会议", "summary": "' + "冰海星區防" * 14)
    assert not loop_at_end('{"title": "会议", "summary": "' + "冰海星區防" * 3)
    assert not loop_at_end(json.dumps(_honest_zh(), ensure_ascii=False))
    assert not loop_at_end('"segments": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]')


def test_a_paraphrase_is_supported_and_an_invented_story_is_not():
    lines = _lines("meeting_en.json")
    cited = source_units(lines[5])  # "Maria will send the revised timeline to the board by Friday."
    assert support("Maria sends the board the revised timeline on Friday", cited).share == 1.0
    story = ("A person is using a device to record their voice, designed to work during "
             "the day as well as at night")
    assert support(story, source_units(" ".join(lines))).share < UNSUPPORTED
    zh = source_units("开放时间早上9点至下午5点。")
    assert support("开放时间是早上九点到下午五点", zh).share >= SUPPORTED  # numerals either way
    assert support("博物馆周一闭馆", zh).share == 0.0


def test_claims_are_re_cited_left_out_or_flagged():
    lines = _lines("meeting_zh.json")
    summary = {**_honest_zh(),
               "key_points": [
                   {"text": "张伟下周五前跟供应商重新谈价格", "segments": [1]},  # said in 11
                   {"text": "公司决定明年在上海开设新的研发中心", "segments": [2]},  # nowhere
                   {"text": "李娜认为短视频转化率高，应削减全部线上预算", "segments": [5]},
               ],
               "decisions": [{"text": "线下活动预算减到二十万", "segments": [99]}]}  # 9
    checked = check_claims(summary, lines)
    points = checked.summary["key_points"]
    assert points[0]["segments"] == [11]
    assert [u["text"] for u in checked.unsupported] == ["公司决定明年在上海开设新的研发中心"]
    assert checked.unsupported[0]["section"] == "key_points"
    assert [p["text"] for p in points] == ["张伟下周五前跟供应商重新谈价格",
                                           "李娜认为短视频转化率高，应削减全部线上预算"]
    assert [(section, index) for section, index, _ in checked.weak] == [("key_points", 1)]
    assert points[1]["segments"] == [5]  # partly said there, and no better elsewhere
    assert checked.summary["decisions"][0]["segments"] in ([9], [7, 9])
    assert checked.recited == 2 and checked.claims == 5


def test_where_the_transcript_says_a_claim():
    lines = [source_units(t) for t in _lines("meeting_zh.json")]
    assert best_lines("张伟需要跟供应商重新谈价格", lines) == [10]
    assert best_lines("财务部要求总预算不能超过一百万，线上广告超支", lines) == [3, 5]
    assert best_lines("月球上的天气", lines) == []
