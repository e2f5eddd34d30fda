"""Dialect-aware recognition with the real model: profiles, auto mode, terms, bundles, eval."""

from __future__ import annotations

import json
import tarfile

import pytest

from device import audio
from device.databases import open_store
from device.eval import main as eval_main
from device.jobs import Runner, load_engines
from device.pipeline import import_audio, requeue_recording
from device.profiles import ProfileError
from device.settings import Cpu
from models.bundles import install_bundle, make_bundle
from models.store import ModelInstallError, load_manifest
from tests.conftest import SPEECH_DIR, debian_voice, require_shared_clips

# Dev-set error rates measured with whisper-base (docs/benchmarks.md); regression guards.
# CTranslate2 picks its int8 kernels by the CPU's vector extensions and they decode these
# short Mandarin clips differently: mean CER 0.077 with AVX-512, 0.160 with AVX2 only
# (停滞→停制, 换→坏; the same on the commit before and after a recogniser change).
MANDARIN = 0.08 if "avx512f" in Cpu.read().simd else 0.17
LIMITS = {"mandarin": MANDARIN, "cantonese": 0.05, "english": 0.05}


def _run(store, settings, engines, path, **kwargs):
    recording, job = import_audio(store, settings, path, **kwargs)
    runner = Runner(settings, engines)
    assert runner.run(store, runner.claim(store, job.id)), store.get_job(job.id).error
    return store.get_recording(recording.id), store.segments(recording.id)


@pytest.mark.slow
def test_eval_harness_holds_error_rates_and_auto_picks_every_dialect(tmp_path):
    require_shared_clips()
    out = tmp_path / "eval.json"
    assert eval_main([str(SPEECH_DIR), "--profiles", "auto,dialect", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    for clip in report["clips"]:
        assert clip["profile"] == clip["dialect"], clip  # auto chose the clip's own dialect
        assert clip["language"] == ("en" if clip["dialect"] == "english" else "zh"), clip
    for key, summary in report["summary"].items():
        dialect = key.split("/")[0]
        assert summary["mean_error_rate"] <= LIMITS[dialect], (key, summary)


@pytest.mark.slow
def test_the_sichuanese_profile_does_better_than_no_profile_on_sichuanese(tmp_path):
    """On the dev set's real Sichuanese clips, as a whole: the profile's prompt must help
    Whisper, not make it write dialect words that were not said (it used to: 0.73 vs 0.59)."""
    dev = SPEECH_DIR.parent / "speech-dev"
    if not (dev / "manifest.tsv").is_file():
        pytest.skip(f"the dialect dev set is not present ({dev}/manifest.tsv)")
    sichuanese = tmp_path / "sichuanese"
    sichuanese.mkdir()
    lines = (dev / "manifest.tsv").read_text(encoding="utf-8").splitlines()
    chosen = [line for line in lines[1:] if line.split("\t")[2] == "sichuanese"]
    (sichuanese / "manifest.tsv").write_text("\n".join([lines[0], *chosen]) + "\n",
                                             encoding="utf-8")
    for line in chosen:
        (sichuanese / line.split("\t")[0]).symlink_to(dev / line.split("\t")[0])
    out = tmp_path / "eval.json"
    assert eval_main([str(sichuanese), "--profiles", "raw,dialect", "--out", str(out)]) == 0
    summary = json.loads(out.read_text())["summary"]
    raw, own = (summary[f"sichuanese/{m}"]["mean_error_rate"] for m in ("raw", "dialect"))
    assert own <= raw - 0.03, (own, raw)


@pytest.mark.slow
def test_auto_mode_decodes_a_one_language_recording_as_the_profile_it_chose(settings, engines):
    """Auto mode used to leave the language to each window even in a recording of one
    language, and a Cantonese clip's last words came out otherwise than with the Cantonese
    profile itself (嗰嗰嗰 for 喎。喎。)."""
    from device.pipeline import recognize, select_profile

    clip = SPEECH_DIR.parent / "speech-dev" / "yue_wsyue_xq0016523_327940_334360.wav"
    if not clip.is_file():
        pytest.skip(f"the dialect dev set is not present ({clip})")
    samples = audio.decode(clip)
    speech = engines.detector.speech_chunks(samples)
    auto = recognize(engines, settings, samples, speech, select_profile(settings, "auto"))
    assert auto.profile.name == "cantonese" and auto.decision.languages() == ("zh",)
    own = recognize(engines, settings, samples, speech, select_profile(settings, "cantonese"))
    assert [(s.start, s.end, s.text) for s in auto.segments] == [
        (s.start, s.end, s.text) for s in own.segments]


@pytest.mark.slow
def test_english_among_mandarin_is_written_in_english_when_auto_hears_one_language(
        settings, engines):
    """English sentences between Mandarin ones escape auto mode's detection across the
    recording (~0.01): decoded in the one language it found, they came out translated into
    Chinese (所以我的美国…) or were lost."""
    import numpy as np

    from device.pipeline import recognize, select_profile

    clips = {c.path.name: audio.decode(c.path) for c in require_shared_clips()}
    order = ["zh_aishell_BAC009S0764W0121.wav", "zh_command_IT0011W0001.wav", "zh_hours.wav",
             "yue_words.wav", "en_jfk.flac"]
    rng = np.random.default_rng(7)  # pauses as long as the asr benchmark's
    pieces = [piece for _ in range(3) for name in order for piece in (
        clips[name], np.zeros(int(rng.uniform(0.4, 2.0) * audio.SAMPLE_RATE), np.float32))]
    samples = np.concatenate(pieces)
    speech = engines.detector.speech_chunks(samples)
    auto = recognize(engines, settings.replace(diarize=False), samples, speech,
                     select_profile(settings, "auto"))
    assert auto.decision.languages() == ("zh",)  # what this is about: English not heard
    english = " ".join(s.text for s in auto.segments if s.language == "en").lower()
    assert english.count("fellow americans") == 3, english
    assert not [s.text for s in auto.segments if "美国" in s.text]


@pytest.mark.slow
def test_cantonese_profile_writes_cantonese(store, settings, engines):
    clip = next(c for c in require_shared_clips() if c.dialect == "cantonese")
    recording, segments = _run(store, settings, engines, clip.path, profile="cantonese")
    text = "".join(s.text for s in segments)
    assert {"嘅", "唔"} <= set(text), text
    assert recording.profile == "cantonese"
    plain = _run(store, settings, engines, clip.path, profile="mandarin")[1]
    assert not {"嘅", "唔"} & set("".join(s.text for s in plain))


@pytest.mark.slow
def test_auto_mode_stores_its_decision(store, settings, engines):
    clip = next(c for c in require_shared_clips() if c.dialect == "cantonese")
    recording, _ = _run(store, settings, engines, clip.path)
    assert recording.profile == "cantonese" and recording.language == "zh"
    assert recording.language_probabilities["zh"] > 0.9
    decision = recording.auto_decision
    assert decision["profile"] == "cantonese"
    assert decision["varieties"]["cantonese"] > decision["varieties"]["mandarin"]


@pytest.mark.slow
def test_script_override_and_glossary_corrections(store, settings, engines):
    clip = next(c for c in require_shared_clips() if c.path.name.startswith("zh_aishell"))
    store.add_glossary("停滞", misheard="停制")  # whisper-base hears 停制 on this clip
    _, segments = _run(store, settings, engines, clip.path, profile="mandarin",
                       script="traditional", terms=["情況=情形"])
    text = "".join(s.text for s in segments)
    assert "停滯" in text and "情形" in text and "出現" in text, text


@pytest.mark.slow
def test_a_profile_that_disappears_fails_the_job_and_keeps_the_recording(store, settings,
                                                                         engines, speech_wav):
    folder = settings.data_dir / "profiles"
    folder.mkdir(parents=True)
    (folder / "mine.toml").write_text('[profile]\nname = "mine"\nlanguage = "en"\n'
                                      'model = "whisper-base"\n')
    recording, job = import_audio(store, settings, speech_wav, profile="mine")
    (folder / "mine.toml").unlink()
    runner = Runner(settings, engines)
    assert not runner.run(store, runner.claim(store, job.id))
    assert "unknown profile 'mine'; choose one of" in store.get_job(job.id).error
    assert (settings.audio_dir / recording.audio_file).is_file()
    recording, job = requeue_recording(store, settings, recording.id, profile="english")
    assert runner.run(store, runner.claim(store, job.id))
    assert store.get_recording(recording.id).status == "done"


def test_bad_profile_choices_are_refused_before_import(store, settings, speech_wav):
    with pytest.raises(ProfileError, match="unknown profile 'klingon'"):
        import_audio(store, settings, speech_wav, profile="klingon")
    with pytest.raises(ProfileError, match="language 'xx' is not one model whisper-base knows"):
        import_audio(store, settings, speech_wav, language="xx")
    with pytest.raises(ProfileError, match="script 'cursive'"):
        import_audio(store, settings, speech_wav, script="cursive")
    assert store.list_recordings() == []


@pytest.mark.slow
def test_a_model_bundle_installs_offline_and_a_profile_routes_to_it(settings, tmp_path):
    clip = next(c for c in require_shared_clips() if c.dialect == "cantonese")
    bundle = make_bundle(settings.models_dir / "whisper-base", tmp_path / "yue.tar",
                         model_id="whisper-base-yue", kind="asr", engine="ctranslate2-whisper",
                         languages=["zh", "en"], description="test bundle")
    models = tmp_path / "models"
    path = install_bundle(bundle, models, log=lambda line: None)
    assert "whisper-base-yue" in load_manifest(models_dir=models)
    assert install_bundle(bundle, models, log=lambda line: None) == path  # idempotent
    local = settings.replace(models_dir=models, asr_model="whisper-base-yue")
    folder = local.data_dir / "profiles"
    folder.mkdir(parents=True)
    (folder / "yue.toml").write_text(
        '[profile]\nname = "yue-bundle"\nlanguage = "zh"\nmodel = "whisper-base-yue"\n'
        'script = "hongkong"\nprompt = "呢個係廣東話嘅錄音，佢哋講咗好多嘢。"\n', encoding="utf-8")
    with open_store(local) as store:
        recording, segments = _run(store, local, load_engines(local), clip.path,
                                   profile="yue-bundle")
    assert recording.model_id == "whisper-base-yue" and "嘅" in segments[0].text


@pytest.mark.slow
def test_damaged_or_foreign_bundles_are_refused_and_install_nothing(settings, tmp_path):
    good = make_bundle(settings.models_dir / "whisper-base", tmp_path / "b.tar",
                       model_id="copy", kind="asr", engine="ctranslate2-whisper",
                       languages=["zh"])
    damaged = tmp_path / "damaged.tar"
    with tarfile.open(good) as src, tarfile.open(damaged, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            if member.name == "config.json":
                data = data.replace(b"{", b"[", 1)
            member.size = len(data)
            import io

            dst.addfile(member, io.BytesIO(data))
    models = tmp_path / "models"
    with pytest.raises(ModelInstallError, match="config.json is damaged"):
        install_bundle(damaged, models, log=lambda line: None)
    assert [p.name for p in models.iterdir()] == []
    text = tmp_path / "notes.tar"
    text.write_text("not a tarball")
    with pytest.raises(ModelInstallError, match="not a model bundle"):
        install_bundle(text, models, log=lambda line: None)
    with pytest.raises(ModelInstallError, match="no such bundle"):
        install_bundle(tmp_path / "missing.tar", models, log=lambda line: None)
    clash = make_bundle(settings.models_dir / "whisper-base", tmp_path / "c.tar",
                        model_id="whisper-base", kind="asr", engine="ctranslate2-whisper",
                        languages=["zh"])
    with pytest.raises(ModelInstallError, match="belongs to a packaged model"):
        install_bundle(clash, models, log=lambda line: None)


@pytest.mark.slow
def test_generated_speech_is_recognised_with_the_english_profile(store, settings, engines,
                                                                tmp_path):
    from tests.conftest import espeak

    path = espeak("Please send the signed contract to the legal department.",
                  tmp_path / "e.wav")
    recording, segments = _run(store, settings, engines, path)
    assert recording.profile == "english" and recording.language == "en"
    assert "contract" in " ".join(s.text for s in segments).lower()
    assert audio.decode(path).size > 0


@pytest.mark.slow
def test_auto_mode_decides_the_variety_per_window(store, settings, engines, tmp_path):
    """Cantonese speakers, then Mandarin ones (the dev set's real clips): the recording
    starts in Cantonese and the Mandarin half does not come out in Cantonese forms."""
    import csv

    import numpy as np

    dev = SPEECH_DIR.parent / "speech-dev"
    if not (dev / "manifest.tsv").is_file():
        pytest.skip(f"the dialect dev set is not present ({dev}/manifest.tsv)")
    with open(dev / "manifest.tsv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    pieces = []
    for dialect in ("cantonese", "mandarin"):
        for row in rows:
            if row["dialect"] == dialect:
                pieces += [audio.decode(dev / row["file"]), np.zeros(8000, np.float32)]
    mandarin_from = sum(p.size for p in pieces[: 2 * sum(r["dialect"] == "cantonese"
                                                         for r in rows)]) / audio.SAMPLE_RATE
    path = tmp_path / "two-varieties.wav"
    audio.write_wav(path, np.concatenate(pieces))
    recording, segments = _run(store, settings, engines, path)
    changes = recording.auto_decision["windows"]
    assert [name for _, name in changes] == ["cantonese", "mandarin"], changes
    assert len(recording.auto_decision["votes"]) >= 4
    assert segments[0].profile == "cantonese"
    tail = [s for s in segments if s.start > mandarin_from + 30]
    assert tail and all(s.profile == "mandarin" for s in tail)
    assert not any(c in s.text for s in tail for c in "嘅唔咗哋喺"), [s.text for s in tail]


@pytest.mark.slow
def test_chinese_answers_in_an_english_interview_keep_their_own_profiles(
        store, settings, engines, tmp_path):
    """An interview mostly in English (real voices) with an answer in Cantonese, then one
    in Mandarin (the dev set's clips): the recording is English, and yet the Cantonese
    answer is decoded and written as Cantonese and the Mandarin one in Simplified
    characters.  (Only the recording's own language used to vote on varieties: Chinese in an
    English recording was written as Whisper writes it, often Traditional, and Cantonese
    without its prompt.)"""
    import csv

    import numpy as np

    from device.profiles import convert_script
    from device.recognize.languages import script

    dev = SPEECH_DIR.parent / "speech-dev"
    if not (dev / "manifest.tsv").is_file():
        pytest.skip(f"the dialect dev set is not present ({dev}/manifest.tsv)")
    with open(dev / "manifest.tsv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    english = iter([*debian_voice("reader"), *debian_voice("allison")[::7]])
    pause = np.zeros(8000, np.float32)
    pieces: list[np.ndarray] = []
    spans: dict[str, tuple[float, float]] = {}

    def say(clips, seconds: float | None = None, name: str | None = None) -> None:
        start = sum(p.size for p in pieces) / audio.SAMPLE_RATE
        for clip in clips:
            pieces.extend([clip, pause])
            if seconds is not None and sum(p.size for p in pieces) / audio.SAMPLE_RATE \
                    >= start + seconds:
                break
        if name:
            spans[name] = (start, sum(p.size for p in pieces) / audio.SAMPLE_RATE)

    def dialect(name: str) -> list[np.ndarray]:
        return [audio.decode(dev / r["file"]) for r in rows if r["dialect"] == name]

    say(english, 70)
    say(dialect("cantonese"), name="cantonese")
    say(english, 50)
    say(dialect("mandarin"), name="mandarin")
    say(english, 60)
    path = tmp_path / "interview.wav"
    audio.write_wav(path, np.concatenate(pieces))
    recording, segments = _run(store, settings, engines, path)
    assert recording.auto_decision["language"] == recording.language == "en"  # as a whole

    def within(name: str) -> list:
        start, end = spans[name]
        return [s for s in segments if start <= (s.start + s.end) / 2 <= end]

    cantonese, mandarin = within("cantonese"), within("mandarin")
    assert cantonese and mandarin
    # Most of the answer; the window it begins in holds English too and may go either way
    as_cantonese = sum(s.end - s.start for s in cantonese if s.profile == "cantonese")
    assert as_cantonese >= 0.6 * sum(s.end - s.start for s in cantonese), [
        (s.start, s.profile, s.text) for s in cantonese]
    assert sum(c in s.text for s in cantonese for c in "嘅唔係咗哋冇嚟喺啲佢") >= 5
    assert all(s.profile == "mandarin" for s in mandarin)
    assert all(convert_script(s.text, "simplified") == s.text for s in mandarin), [
        s.text for s in mandarin]
    others = [s for s in segments if s not in cantonese and s not in mandarin]
    assert all(s.profile == "english" for s in others if s.language == "en")
    # English sentences Whisper wrote on after Cantonese in one segment are English
    assert all(s.language == "en" for s in segments if script(s.text) == "latin"), [
        (s.start, s.language, s.text) for s in segments if script(s.text) == "latin"]
