"""Dialect profiles as data: loading, validation, text finishing, and their errors."""

from __future__ import annotations

import pytest

from device.audio import SAMPLE_RATE
from device.profiles import (
    ProfileError,
    Terms,
    chinese_number,
    choose_auto_profile,
    finish_text,
    get_profile,
    load_profiles,
)
from device.records import Segment
from device.vad import SpeechChunk
from models.store import load_manifest


def _languages(model_id):
    spec = load_manifest().get(model_id)
    return None if spec is None else set(spec.languages)


def test_builtin_profiles_are_valid_for_their_models():
    profiles = load_profiles(None)
    assert {"auto", "mandarin", "cantonese", "sichuanese", "english"} <= set(profiles)
    for name in profiles:
        get_profile(name, profiles, _languages)
    assert "嘅" in profiles["cantonese"].prompt and "咗" in profiles["cantonese"].prompt


def test_admin_profiles_override_and_extend(tmp_path):
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "hakka.toml").write_text(
        '[profile]\nname = "hakka"\ntitle = "客家话"\nlanguage = "zh"\nmodel = "whisper-base"\n'
        'prompt = "客家话录音"\n[profile.corrections]\n"涯" = "𠊎"\n', encoding="utf-8")
    (folder / "mandarin.toml").write_text(
        '[profile]\nname = "mandarin"\nlanguage = "zh"\nmodel = "whisper-base"\n'
        'script = "traditional"\n', encoding="utf-8")
    profiles = load_profiles(tmp_path)
    assert profiles["hakka"].corrections == (("涯", "𠊎"),)
    assert profiles["mandarin"].script == "traditional"
    assert profiles["mandarin"].source.endswith("mandarin.toml")


@pytest.mark.parametrize(
    "content, message",
    [
        ('[profile]\nname = "x"\nlanguage = "zh"\nmodel = "whisper-base"\ncolour = "red"\n',
         "unknown key.*colour"),
        ('[profile]\nname = "x"\nlanguage = "zh"\nmodel = "whisper-base"\nscript = "klingon"\n',
         "script = 'klingon'; choose one of simplified, traditional, hongkong, as-spoken"),
        ('[profile]\nname = "x"\nmodel = "whisper-base"\n', "needs a 'language'"),
        ('[profile\nname = "x"\n', "bad.toml"),
        ('title = "no table"\n', r"expected \[profile\]"),
    ],
)
def test_a_profile_file_with_errors_names_the_problem(tmp_path, content, message):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "bad.toml").write_text(content, encoding="utf-8")
    with pytest.raises(ProfileError, match=message):
        load_profiles(tmp_path)


def test_unknown_profile_and_missing_language_list_the_choices(tmp_path):
    profiles = load_profiles(None)
    with pytest.raises(ProfileError, match="unknown profile 'hokkien'; choose one of auto, "):
        get_profile("hokkien", profiles, _languages)
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "yue.toml").write_text(
        '[profile]\nname = "yue-native"\nlanguage = "yue"\nmodel = "whisper-base"\n')
    profiles = load_profiles(tmp_path)
    with pytest.raises(ProfileError, match="whisper-base has no language 'yue'; it knows af"):
        get_profile("yue-native", profiles, _languages)
    (tmp_path / "profiles" / "yue.toml").write_text(
        '[profile]\nname = "big"\nlanguage = "zh"\nmodel = "whisper-large"\n')
    with pytest.raises(ProfileError, match="model 'whisper-large', which is not in the model"):
        get_profile("big", load_profiles(tmp_path), _languages)


def test_script_punctuation_numbers_and_english_is_untouched():
    p = load_profiles(None)
    assert finish_text("開放時間早上九點 至下午五點", p["mandarin"]) == "开放时间早上9点，至下午5点"
    assert finish_text("我有一点累,百分之五十的人来了.", p["mandarin"]) == "我有一点累，50%的人来了。"
    assert finish_text("呢几个字都表达唔到", p["cantonese"]) == "呢幾個字都表達唔到"
    english = "Ask not what your country can do for you, ask what you can do."
    for profile in p.values():
        assert finish_text(english, profile) == english
    assert finish_text("我们用Python 3.11开发", p["mandarin"]) == "我们用Python 3.11开发"
    assert finish_text("ＡＰＰ版本２", p["english"]) == "APP版本2"


def test_chinese_numbers():
    assert [chinese_number(n) for n in ("十二", "二零二四", "一千二百三十", "三万五千", "两百")] == [
        12, 2024, 1230, 35000, 200]


def test_terms_and_corrections():
    terms = Terms.parse(["华为", "花为=华为", " ", "张总"])
    assert terms.hotwords == ("华为", "张总")
    assert finish_text("花为的张总说", load_profiles(None)["mandarin"], terms) == "华为的张总说"
    with pytest.raises(ProfileError, match="misheard=right"):
        Terms.parse(["=华为"])


def _trials(results: dict[str, tuple[str, float]]):
    """Trial decodings of the speech: each candidate profile's (text, mean log-prob)."""
    return lambda candidates: [
        [Segment(0, 1, results[p.name][0], avg_logprob=results[p.name][1])]
        for p in candidates]


def test_auto_prefers_a_variety_only_with_its_written_forms_and_a_better_score():
    profiles = load_profiles(None)

    cantonese_speech = {"mandarin": ("这几个字都表达不到我想讲的意思", -0.28),
                        "cantonese": ("呢幾個字都表達唔到我想講嘅意思", -0.10),
                        "sichuanese": ("这几个字都表达不到我想讲的意思", -0.17)}
    assert choose_auto_profile("zh", profiles, _trials(cantonese_speech))[0] == "cantonese"
    mandarin_speech = {"mandarin": ("甚至出现交易几乎停滞的情况", -0.11),
                       "cantonese": ("甚至出現交易幾乎停滯嘅情況", -0.14),
                       "sichuanese": ("甚至出现交易几乎停滞的情况", -0.13)}
    assert choose_auto_profile("zh", profiles, _trials(mandarin_speech))[0] == "mandarin"
    # Sichuanese speech the Cantonese prompt writes in Cantonese forms, more likely than the
    # Mandarin decoding but not than the Sichuanese one: no written forms decide, and the
    # plain decoding is unsure (below Sichuanese's plain_logprob_below): Sichuanese
    sichuanese_speech = {"mandarin": ("就你走来的敲了个敲了", -1.04),
                         "cantonese": ("嘅你之後嚟嘅敲咗個", -0.57),
                         "sichuanese": ("就你走来的，跳了个跳了", -0.55)}
    assert choose_auto_profile("zh", profiles, _trials(sichuanese_speech))[0] == "sichuanese"
    # The same, decoded surely by the plain prompt: no clear winner, the plain decoding
    unclear = {**sichuanese_speech, "mandarin": ("就你走来的敲了个敲了", -0.40)}
    assert choose_auto_profile("zh", profiles, _trials(unclear))[0] == "mandarin"
    # A short command decoded unsurely is too short to tell
    command = {name: ("换一首歌", -0.56) for name in sichuanese_speech}
    assert choose_auto_profile("zh", profiles, _trials(command))[0] == "mandarin"
    assert choose_auto_profile("en", profiles, _trials({}))[0] == "english"
    assert choose_auto_profile("fr", profiles, _trials({}))[0] == "auto"


def test_scoring_treats_both_sides_alike_and_a_bad_manifest_is_one_clear_line(tmp_path,
                                                                             capsys):
    from device.eval import main
    from device.text import character_error_rate, numbers_as_digits

    # script, width, punctuation and numbers written either way score the same
    assert character_error_rate("他今年九十岁，住在臺北。", "他今年90歲 住在台北") == 0.0
    assert character_error_rate("２０２６年", "二零二六年") == 0.0
    assert numbers_as_digits("一万五千") == "15000"
    assert character_error_rate("九十", "八十") == 0.5  # a wrong number is still wrong
    from device.text import word_error_rate

    # contractions and letters spelled out score the same; other words do not
    assert word_error_rate("I'm told N B S can't", "I am told NBS can not") == 0.0
    assert word_error_rate("I'm told N B S can't", "I am sold NBS can not") == 1 / 6
    (tmp_path / "manifest.tsv").write_text(
        "file\tlanguage\tdialect\treference\nx.wav\tzh\thakka\t你好\n", encoding="utf-8")
    assert main([str(tmp_path), "--profiles", "raw,dialect"]) == 1
    err = capsys.readouterr().err
    assert err.strip().endswith("(profiles: auto, cantonese, english, mandarin, sichuanese)")
    assert "manifest.tsv:2: unknown dialect 'hakka'" in err and "Traceback" not in err


def test_a_bad_plain_logprob_below_is_refused(tmp_path):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "x.toml").write_text(
        '[profile]\nname = "x"\nlanguage = "zh"\nmodel = "whisper-base"\n'
        'plain_logprob_below = 0.5\n', encoding="utf-8")
    with pytest.raises(ProfileError, match="plain_logprob_below must be a log-probability"):
        load_profiles(tmp_path)


def test_auto_changes_variety_only_when_two_windows_in_a_row_vote_against_it():
    from device.recognize import RecognitionOptions
    from device.varieties import Block, profile_at, settle, window_chunks

    # one odd window does not flip the rest; None (another language) changes nothing
    assert settle(["cantonese", "mandarin", None, "mandarin", "cantonese"], "cantonese") == \
        ["cantonese"] * 5
    # the case: a Cantonese first window, then Mandarin (or Sichuanese, also not
    # Cantonese) windows: the rest is not Cantonese
    votes = ["cantonese", "cantonese", "mandarin", "sichuanese", "mandarin", "mandarin"]
    assert settle(votes, "cantonese") == ["cantonese"] * 2 + ["mandarin"] * 4
    # two votes against that disagree: the plain decoding, when it cannot tell
    assert settle(["mandarin", "cantonese", "sichuanese", "mandarin"], "mandarin",
                  plain="mandarin") == ["mandarin"] * 4
    assert settle(["mandarin", "cantonese", "sichuanese", "sichuanese"], "mandarin",
                  plain="mandarin") == ["mandarin"] * 2 + ["sichuanese"] * 2
    assert settle(["sichuanese", "cantonese", "mandarin", "mandarin"], "sichuanese",
                  plain="mandarin") == ["sichuanese"] + ["mandarin"] * 3
    # a window's variety depends only on the votes up to the next window's
    assert [settle(votes[: i + 2], "cantonese")[i] for i in range(5)] == \
        settle(votes, "cantonese")[:5]
    # a stretch of the language after another (English: None) starts where its first
    # window votes, as the first window starts the recording; then the hysteresis holds
    interview = [None, None, "cantonese", "mandarin", None, "mandarin", "cantonese", None]
    assert settle(interview, "mandarin", starts={2, 5}) == \
        ["mandarin"] * 2 + ["cantonese"] * 3 + ["mandarin"] * 3
    assert settle(interview, "mandarin") == ["mandarin"] * 8
    # windows as the recogniser packs them: at most 30 s of speech, cut at chunk edges
    speech = [SpeechChunk(int(a * SAMPLE_RATE), int(b * SAMPLE_RATE))
              for a, b in [(0, 12), (20, 32), (40, 50), (60, 70), (80, 85)]]
    assert window_chunks(speech) == [speech[:2], speech[2:5]]
    profiles = load_profiles(None)
    block = Block(speech, [(0.0, profiles["cantonese"]), (40.0, profiles["mandarin"])])
    assert [block.profile_at(t).name for t in (0, 39.9, 40, 84)] == \
        ["cantonese", "cantonese", "mandarin", "mandarin"]
    options = RecognitionOptions(initial_prompt="a", prompts=((0.0, "c"), (40.0, None)))
    assert [options.prompt_at(t) for t in (0, 39.9, 40)] == ["c", "c", None]
    # the speech of blocks decoded one after the other, decoded again at once: each block's
    # prompts from its start on
    later = RecognitionOptions(initial_prompt="d", prompts=((90.0, "e"),))
    assert [options.then(60.0, later).prompt_at(t) for t in (0, 40, 59.9, 60, 89, 90)] == \
        ["c", None, None, "d", "d", "e"]
    # and the profiles of blocks taken one after the other
    later = Block(speech[4:], [(80.0, profiles["sichuanese"])])
    assert [profile_at([*block.profiles, *later.profiles], t).name for t in (0, 79, 84)] == \
        ["cantonese", "mandarin", "sichuanese"]

def test_auto_compares_likelihoods_only_of_decodings_of_the_whole_speech():
    """A decoding that left speech out is surer for it: it neither wins nor sets the bar."""
    profiles = load_profiles(None)

    # Cantonese speech whose plain decodings stopped after a few words
    stopped = {"mandarin": ("而較早前已經復航的", -0.16),
               "cantonese": ("而較早前已經復航嘅氹仔碼頭星期五開始增設夜間航班，不過兩個碼頭暫時都"
                             "冇凌晨班次，有旅客希望可以留喺澳門長啲時間", -0.32),
               "sichuanese": ("而较早前已经复航的", -0.19)}
    choice, scores = choose_auto_profile("zh", profiles, _trials(stopped))
    assert choice == "cantonese"
    assert scores["mandarin_characters"] == 9
    # Sichuanese speech the Cantonese prompt wrote in Cantonese forms, surer and shorter
    shortened = {"mandarin": ("就临走那天挑了个飘了一下嗨呀弟弟灵魂儿就飞上九霄云", -1.04),
                 "cantonese": ("嘅你之後嚟嘅敲咗個敲咗嘢嗰啲", -0.73),
                 "sichuanese": ("就临走那天挑了个飘了一下嗨呀弟弟灵魂儿就飞上九霄云", -0.97)}
    assert choose_auto_profile("zh", profiles, _trials(shortened))[0] == "sichuanese"


def test_auto_mode_prompts_only_with_a_variety_and_keeps_the_recordings_languages(tmp_path):
    from device.pipeline import recognition_options
    from device.profiles import NO_TERMS, load_profiles
    from device.settings import Settings

    settings = Settings(data_dir=tmp_path)
    profiles = load_profiles(tmp_path)
    mandarin, cantonese = profiles["mandarin"], profiles["cantonese"]
    # a profile chosen by hand: its language and its prompt
    own = recognition_options(mandarin, NO_TERMS, settings)
    assert (own.language, own.initial_prompt) == ("zh", mandarin.prompt)
    # auto mode, a recording of Mandarin only: windows keep their language within the
    # recording's script, and the Mandarin prompt (which wrote pieces of itself for whole
    # sentences over minutes of speech) is not used; a variety's prompt is
    auto = recognition_options(mandarin, NO_TERMS, settings, auto=True, languages=("zh",))
    assert (auto.language, auto.languages, auto.initial_prompt) == (None, ("zh",), None)
    variety = recognition_options(cantonese, NO_TERMS, settings, auto=True, languages=("zh",))
    assert variety.initial_prompt == cantonese.prompt and variety.language is None


def test_auto_finishes_a_segment_in_its_own_languages_profile():
    """Whisper writes on across a change of language inside a window: a Chinese sentence in
    an English window is finished as Chinese (Simplified, full-width punctuation), not as
    the English profile leaves text (Whisper's Traditional characters, its spaces)."""
    from device.profiles import AUTO, finish_segment, load_profiles
    from device.varieties import in_its_language, plain_of

    profiles = load_profiles(None)
    english, cantonese = profiles["english"], profiles["cantonese"]
    assert (plain_of("zh", profiles), plain_of("en", profiles)) == ("mandarin", "english")
    assert plain_of("fr", profiles) == AUTO
    assert in_its_language(english, "zh", profiles).name == "mandarin"
    assert in_its_language(cantonese, "zh", profiles) is cantonese  # its variety kept
    assert in_its_language(cantonese, "en", profiles) is english
    assert in_its_language(profiles["auto"], "fr", profiles).name == AUTO
    assert in_its_language(english, None, profiles) is english
    said = Segment(start=0.0, end=2.0, text="歡迎大家 來體驗", language="zh")
    assert finish_segment(said, in_its_language(english, "zh", profiles)).text == \
        "欢迎大家，来体验"
