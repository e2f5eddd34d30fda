"""Schema-constrained generation with the real small model: the grammar holds when the
model's own choice is refused, and a prompt too long for the context is an error."""

from __future__ import annotations

import json
from contextlib import closing

import pytest

from device.summarize import SummaryError
from device.summary_job import load_summarizer

SMALL = "qwen2.5-coder-0.5b-instruct"


@pytest.fixture(scope="module")
def generator():
    from device.settings import Settings

    with closing(load_summarizer(Settings.load(), SMALL)) as summarizer:
        yield summarizer.generator


@pytest.mark.slow
def test_the_grammar_holds_where_the_model_would_write_something_else(generator):
    schema = {"type": "object",
              "properties": {"capital": {"type": "string", "enum": ["Zürich", "广州"]},
                             "founded": {"type": "integer"},
                             "motto": {"type": "string", "maxLength": 12}},
              "required": ["capital", "founded", "motto"]}
    completion = generator.complete(
        "Answer in JSON.", "What is the capital of France, when was Paris founded, and "
        "what is the long official motto of the city of Paris?", schema, max_tokens=80)
    answer = json.loads(completion.text)
    assert answer["capital"] in ("Zürich", "广州")  # the model's own answer is Paris
    assert isinstance(answer["founded"], int) and len(answer["motto"]) <= 12
    assert completion.refusals >= 1
    assert completion.completion_tokens > completion.refusals


@pytest.mark.slow
def test_a_second_call_reads_only_what_differs_from_the_first(generator):
    system = "You list facts as JSON. " * 20
    schema = {"type": "object", "properties": {"facts": {"type": "array", "maxItems": 2,
                                                         "items": {"type": "string",
                                                                   "maxLength": 30}}},
              "required": ["facts"]}
    first = generator.complete(system, "Facts about tea.", schema, max_tokens=60)
    second = generator.complete(system, "Facts about rice.", schema, max_tokens=60)
    assert json.loads(first.text)["facts"] is not None and json.loads(second.text)["facts"]
    assert second.read_tokens < second.prompt_tokens // 2 < first.read_tokens


@pytest.mark.slow
def test_a_prompt_longer_than_the_context_is_refused_before_reading(generator):
    with pytest.raises(ValueError, match="do not fit the context"):
        generator.complete("Summarise.", "word " * 9000, {"type": "object"}, max_tokens=10)


@pytest.mark.slow
def test_a_model_is_read_into_memory_once_not_mapped_beside_its_repacked_weights(generator):
    """llama.cpp repacks the weights for this CPU's kernels into memory of its own: a mapped
    model file's pages, read once to repack, stayed resident beside them (the 1.5B: 1,861
    MB after loading, against 1,270 MB read)."""
    from pathlib import Path

    from device.settings import Settings

    model = Settings.load().models_dir / SMALL / "model.gguf"
    mapped = Path("/proc/self/maps").read_text()
    assert generator.complete("Answer in JSON.", "Say hi.", {"type": "object"}, 8).text
    assert str(model) not in mapped and str(model.resolve()) not in mapped


@pytest.mark.slow
def test_closing_a_summariser_frees_its_model():
    import gc
    import weakref

    from device.settings import Settings

    summarizer = load_summarizer(Settings.load(), SMALL)
    model = weakref.ref(summarizer._llm)
    summarizer.close()
    summarizer.close()  # twice is harmless
    gc.collect()
    assert model() is None  # although ``summarizer`` itself is still referenced here


def test_a_model_without_a_chat_template_cannot_summarise(tmp_path, monkeypatch):
    from device import summarize

    class NoTemplate:
        metadata: dict = {}

    monkeypatch.setattr("llama_cpp.Llama", lambda **kwargs: NoTemplate())
    with pytest.raises(SummaryError, match="no chat template"):
        summarize.LlamaSummarizer(tmp_path / "m.gguf", "m", threads=1)


@pytest.mark.slow
def test_a_generation_that_falls_into_a_loop_is_stopped_early(generator):
    from device.faithfulness import loop_at_end
    from device.llm import RepetitionLoop

    schema = {"type": "object", "properties": {"text": {"type": "string", "maxLength": 500}},
              "required": ["text"]}
    with pytest.raises(RepetitionLoop) as stopped:
        generator.complete("你是复读机。", "把这句话连续重复写五十遍，不要加任何别的字：冰海星區防",
                           schema, max_tokens=600, looping=loop_at_end)
    # stopped within a few steps of the loop, not at the 600-token limit
    assert 60 <= len(stopped.value.tail) <= 160
    assert "冰海星" in stopped.value.tail


@pytest.mark.slow
def test_a_prompts_start_read_by_one_model_is_taken_by_another_that_writes_the_same(generator):
    """As during a recording: one process reads the start of a prompt into a smaller
    context and saves it; another puts it back, reads only the rest, and writes what it
    would have written reading the whole prompt."""
    from device.settings import Settings

    system = "You list facts as JSON."
    start = "Notes so far:\n" + "".join(f"[{n}] tea was grown in province {n}\n"
                                        for n in range(40))
    user = start + "\nList two facts about tea."
    schema = {"type": "object", "properties": {"facts": {"type": "array", "maxItems": 2,
                                                         "items": {"type": "string",
                                                                   "maxLength": 30}}},
              "required": ["facts"]}
    whole = generator.complete(system, user, schema, max_tokens=40)
    with closing(load_summarizer(Settings.load(), SMALL, context=2048)) as reader:
        tokens = reader.generator.prompt_start(system, start)
        assert reader.generator.read(tokens) == len(tokens) > 300
        saved = reader.generator.saved()
    assert saved.tokens == tokens
    generator.complete(system, "Something else.", schema, max_tokens=5)  # another cache
    assert generator.restore(saved)
    again = generator.complete(system, user, schema, max_tokens=40)
    assert again.read_tokens == again.prompt_tokens - len(tokens)
    assert again.text == whole.text
