"""Naming the language of a stretch written in another script than its window's."""

from __future__ import annotations

from device.recognize.languages import clear_choice, script, script_of


def test_a_window_names_the_language_it_ranks_far_above_others_of_its_script():
    # Measured: English spoken after Mandarin in one window.
    ranking = [("zh", 0.9866), ("en", 0.0112), ("ko", 0.0002), ("de", 0.0002), ("ja", 0.0002)]
    assert clear_choice(ranking, "latin") == "en"
    assert clear_choice(ranking, "cjk") == "zh"
    # Nothing stands out: the caller detects the language on the stretch itself.
    assert clear_choice([("zh", 0.998), ("en", 0.0004), ("de", 0.0003)], "latin") is None
    assert clear_choice([("zh", 0.99), ("ja", 0.004), ("en", 0.003), ("de", 0.002)],
                        "latin") is None
    assert clear_choice([], "latin") is None


def test_text_is_in_a_script_only_when_it_clearly_is():
    assert script("开放时间早上9点") == "cjk"
    assert script(" And so my fellow Americans") == "latin"
    assert script("OK") is None and script("9点") is None
    assert script_of("yue") == "cjk" and script_of("en") == "latin" and script_of(None) is None
    # alphabets apart: Russian is not written in Latin letters, nor English in Cyrillic
    assert script("NBS заявила, что бюджет") == "cyrillic" and script_of("ru") == "cyrillic"
    assert script("Η Ελλάδα") == "greek" and script_of("el") == "greek"
    assert script("NBS said, что") is None  # neither alphabet has three quarters
    assert script("la 1ª vez") == "latin"  # an ordinal sign is no letter of a script


def test_a_window_is_decoded_in_the_recordings_language_of_its_script():
    from device.recognize._faster_whisper import _decoded_in

    sichuanese = [("<|yue|>", 0.5), ("<|zh|>", 0.4), ("<|en|>", 0.05), ("<|ja|>", 0.05)]
    english = [("<|en|>", 0.6), ("<|zh|>", 0.3), ("<|yue|>", 0.1)]
    # a recording auto mode found in Mandarin: a window Whisper ranks Cantonese is decoded
    # in Mandarin, the rest in the order Whisper ranks them; an English one stays English
    assert _decoded_in(sichuanese, ("zh",)) == [
        ("<|zh|>", 0.4), ("<|yue|>", 0.5), ("<|en|>", 0.05), ("<|ja|>", 0.05)]
    assert _decoded_in(english, ("zh",)) == english
    # a language of the recording's keeps its window, and so does one of a script none has
    assert _decoded_in(sichuanese, ("zh", "yue")) == sichuanese
    assert _decoded_in(english, ("yue", "zh")) == english
    assert _decoded_in([("<|ja|>", 0.7), ("<|zh|>", 0.3)], ("en",)) == [
        ("<|ja|>", 0.7), ("<|zh|>", 0.3)]
    # a window clearly in a language of an alphabet the recording's detection missed is
    # decoded in it, not in another of the recording's (it would be translated); an
    # unclear one is decoded in the recording's
    spanish = [("<|es|>", 0.86), ("<|pt|>", 0.1), ("<|en|>", 0.04)]
    assert _decoded_in(spanish, ("en", "fr")) == spanish
    unclear = [("<|en|>", 0.23), ("<|es|>", 0.18), ("<|pt|>", 0.1)]
    assert _decoded_in(unclear, ("es", "fr")) == [
        ("<|es|>", 0.18), ("<|en|>", 0.23), ("<|pt|>", 0.1)]
    # ... in one of the recording's languages of its alphabet: Russian found first does
    # not take an unclear window of Latin letters (it would be written in Cyrillic)
    unclear = [*unclear, ("<|fr|>", 0.05), ("<|ru|>", 0.01)]
    assert _decoded_in(unclear, ("ru", "fr")) == [("<|fr|>", 0.05), *unclear[:3], unclear[4]]
    assert _decoded_in(unclear, ("ru",)) == unclear
    # ... the one of them the window ranks highest, not the one the recording does
    assert _decoded_in(unclear, ("fr", "es"))[0] == ("<|es|>", 0.18)
