"""ASR benchmark: tingji's pipeline next to plain faster-whisper on the same >= 5 min of speech.

    python bench/asr.py [--seconds 300] [--out bench/results/asr.json]

Three recordings of real speech, each of many different clips, none repeated
(``SCENARIOS``): Chinese of three varieties then English (5 min), the Chinese clips alone
(all there are, ~3 min) and English alone (5 min).

Each variant runs in its own process so its peak RSS is its own:
  plain-sequential  WhisperModel.transcribe(vad_filter=True)
  plain-batched     BatchedInferencePipeline.transcribe(batch_size=2)
  tingji            import_audio + the job runner: decode + VAD + ASR + speakers + SQLite
                    store (the time finding the speakers is reported apart, speakers_s)
  tingji-greedy     the same with the setting beam_size = 1 (greedy; doubtful windows
                    decoded again with a beam of 5)
  tingji-fast       the same job as a quick draft (an import's option): one greedy pass,
                    nothing detected or tried before it, what a window loses left lost (the
                    floor-words pass, stored, with speakers)
Two references, to tell where the time goes on the machine at hand:
  plain-batched-timestamps  plain-batched decoding timestamps (without_timestamps=False), as
                    tingji does: what the plain batched run costs when it writes segment times
  floor             decode + VAD + tingji's windows decoded once, greedily, without word
                    times: no auto mode, retry, recovery of lost speech or store.  Not a
                    usable transcript (it loses what a window drops); the least that
                    transcribing every window once costs on this machine
  floor-words       the floor with word times (which the transcript needs): the first pass
                    of tingji's recogniser alone, greedy, in one language
The tingji variants also report their decoding passes (beam, windows): the first pass, a
retry of the windows that failed Whisper's tests, the speech chunks a window lost.
All use the same model files, int8, every core and word timestamps.  The plain runs use one
decoder on every core (faster-whisper's way); tingji a single-threaded decoder per core,
decoding windows side by side, each ``batch_size`` (settings) windows at a time.  Accuracy
is measured too: the character error rate of the whole transcript against the clips'
reference texts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import header, write  # noqa: E402
from device import audio  # noqa: E402
from device.databases import open_store  # noqa: E402
from device.settings import Settings, hardware_profile  # noqa: E402
from device.text import character_error_rate  # noqa: E402

VARIANTS = ("plain-sequential", "plain-batched", "tingji", "tingji-greedy", "tingji-fast",
            "plain-batched-timestamps", "floor", "floor-words")
PLAIN = ("plain-sequential", "plain-batched")  # the "fastest plain run" is one of these
TARGETS = {"rtf_max": 0.04, "peak_rss_mb_max": 600, "ratio_to_fastest_plain_max": 1.1,
           "ratio_to_floor_words_max": 1.25}
# Plain BatchedInferencePipeline's batch: 2 windows (0.5-0.6 GB), as in every run so far.
PLAIN_BATCH_SIZE = 2


def spoken_sentence(seconds: float, path: Path) -> tuple[float, list[str], str]:
    """Without ../shared's clips: espeak-ng's sentence joined with 0.4-2 s pauses until
    ``seconds`` (the duration, the clip names and the reference of the whole)."""
    sentence = "The committee will meet again next Tuesday to review the budget."
    generated = path.with_suffix(".espeak.wav")
    subprocess.run(["espeak-ng", "-w", str(generated), sentence], check=True)
    clip = audio.decode(generated)
    rng = np.random.default_rng(7)
    pieces, references, total = [], [], 0
    while total < seconds * audio.SAMPLE_RATE:
        pause = np.zeros(int(rng.uniform(0.4, 2.0) * audio.SAMPLE_RATE), dtype=np.float32)
        pieces += [clip, pause]
        references.append(sentence)
        total += clip.size + pause.size
    audio.write_wav(path, np.concatenate(pieces))
    return total / audio.SAMPLE_RATE, [generated.name], " ".join(references)


def run_variant(name: str, wav: Path) -> dict:
    """Runs inside the child process."""
    settings = Settings.load()
    profile = hardware_profile(settings)
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    from models.store import get_spec, verify

    model_dir = str(verify(get_spec(settings.asr_model), settings.models_dir))
    report = None
    start = time.perf_counter()
    if name.startswith("tingji"):
        from device.jobs import Runner
        from device.pipeline import import_audio
        from device.speakers import stage

        # the job also finds who spoke (diarisation): timed apart, as floor-words does not
        labelling, label_speakers = [], stage.label_speakers

        def timed(*args, **kwargs):
            began = time.perf_counter()
            try:
                return label_speakers(*args, **kwargs)
            finally:
                labelling.append(time.perf_counter() - began)

        stage.label_speakers = timed

        with tempfile.TemporaryDirectory() as data:
            local = settings.replace(data_dir=Path(data))
            if name == "tingji-greedy":
                local = local.replace(beam_size=1)
            runner = Runner(local)
            engines = runner.prepare()  # load the models before the clock starts
            loaded = time.perf_counter()
            with open_store(local) as store:
                recording, job = import_audio(store, local, wav, fast=name == "tingji-fast")
                runner.run(store, runner.claim(store, job.id))
                segments = store.segments(recording.id)
                assert store.get_job(job.id).status == "done"
            # Each pass's beam and windows, retries and encoder passes.
            report = engines.recognizer(local.asr_model).report.as_dict()
            texts = [s.text for s in segments]
            done = time.perf_counter()
    elif name.startswith("floor"):
        from device.jobs import load_engines
        from device.recognize import RecognitionOptions

        engines = load_engines(settings)
        recognizer = engines.recognizer(settings.asr_model)
        # Each window detects its own language (one decoder step); the first starts it.
        options = RecognitionOptions(languages=("zh",), word_timestamps=name == "floor-words",
                                     recover_lost=False, beam_size=1, retry_beam_size=1)
        loaded = time.perf_counter()
        samples = audio.decode(wav)
        speech = engines.detector.speech_chunks(samples)
        texts = [s.text for s in recognizer.transcribe(samples, speech, options)]
        done = time.perf_counter()
    else:
        model = WhisperModel(model_dir, device="cpu", compute_type=profile.compute_type,
                             cpu_threads=profile.cpu_threads, local_files_only=True)
        loaded = time.perf_counter()
        if name.startswith("plain-batched"):
            segments, _ = BatchedInferencePipeline(model).transcribe(
                str(wav), batch_size=PLAIN_BATCH_SIZE, word_timestamps=True,
                without_timestamps=name != "plain-batched-timestamps")
        else:
            segments, _ = model.transcribe(str(wav), vad_filter=True, word_timestamps=True)
        texts = [s.text for s in segments]
        done = time.perf_counter()
    return {
        "load_s": round(loaded - start, 2),
        "wall_s": round(done - loaded, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "segments": len(texts),
        "text": " ".join(texts),
        **({"passes": report, "speakers_s": round(sum(labelling), 2)} if report else {}),
    }


SCENARIOS = {"mixed": ("chinese", "english"), "chinese": ("chinese",),
             "english": ("english",)}
"""Each recording's clips, each used once in a shuffled order (``bench.longform``): every
Mandarin, Cantonese and Sichuanese clip of ../shared (~3 min), then English ones (prompts
and readers from Debian packages) to ``--seconds``; the Chinese clips alone; English alone."""


def scenario_audio(kinds: tuple[str, ...], seconds: float, path: Path
                   ) -> tuple[float, dict[str, int], str]:
    """The recording of clips of ``kinds``, each clip once, up to ``seconds``: its
    duration, the clips of each kind and the reference of the whole.  Without the clips,
    espeak-ng's sentence (``spoken_sentence``)."""
    from bench.longform import assemble, chinese_clips, english_clips

    sources = {"chinese": chinese_clips, "english": english_clips}
    pieces, texts, counts, rest = [], [], {}, seconds
    for kind in kinds:
        clips = sources[kind]()
        if rest <= 0 or not clips:
            continue
        samples, text, counts[kind] = assemble(clips, rest, seed=7)
        pieces.append(samples)
        texts.append(text)
        rest -= samples.size / audio.SAMPLE_RATE
    if not pieces:
        duration, names, reference = spoken_sentence(seconds, path)
        return duration, {name: 1 for name in names}, reference
    samples = np.concatenate(pieces)
    audio.write_wav(path, samples)
    return samples.size / audio.SAMPLE_RATE, counts, " ".join(texts)


def run_scenario(name: str, kinds: tuple[str, ...], seconds: float) -> dict:
    work = ROOT / "bench" / "work"
    work.mkdir(parents=True, exist_ok=True)
    wav = work / f"{name}-{int(seconds)}s.wav"
    duration, sources, reference = scenario_audio(kinds, seconds, wav)
    print(f"{name}: {duration:.0f} s of speech from {sum(sources.values())} different "
          "clips", file=sys.stderr)
    results = {}
    for variant in VARIANTS:
        child = subprocess.run(
            [sys.executable, __file__, "--variant", variant, "--wav", str(wav)],
            capture_output=True, text=True, cwd=ROOT,
            env={**os.environ, "TINGJI_LOG_LEVEL": "ERROR"},
        )
        if child.returncode != 0:
            raise RuntimeError(f"{variant} failed:\n{child.stderr}")
        result = json.loads(child.stdout.strip().splitlines()[-1])
        result["rtf"] = round(result["wall_s"] / duration, 4)
        # Character error rate of the whole transcript against the clips' references
        # (Chinese and English alike: folded to Simplified, no punctuation or spaces).
        result["cer"] = round(character_error_rate(reference, result.pop("text")), 3)
        results[variant] = result
        print(f"  {variant:>24}: {result['wall_s']:6.1f} s  RTF {result['rtf']:.3f}  "
              f"peak RSS {result['peak_rss_mb']:4.0f} MB  CER {result['cer']:.3f}",
              file=sys.stderr)
    fastest = min(results[variant]["wall_s"] for variant in PLAIN)
    ours, draft = results["tingji"], results["tingji-fast"]
    floor_words = results["floor-words"]["wall_s"]
    ratio = round(ours["wall_s"] / fastest, 3)
    return {
        "audio": {"seconds": round(duration, 1), "clips": sources},
        "results": results,
        "tingji_vs_fastest_plain": ratio,
        "tingji_greedy_vs_fastest_plain": round(results["tingji-greedy"]["wall_s"] / fastest, 3),
        "floor_vs_fastest_plain": round(results["floor"]["wall_s"] / fastest, 3),
        "floor_words_vs_fastest_plain": round(results["floor-words"]["wall_s"] / fastest, 3),
        # imports: the batch transcription against its floor with word times, same run
        "tingji_vs_floor_words": round(ours["wall_s"] / results["floor-words"]["wall_s"], 3),
        # the same without the time the job spent finding who spoke
        "tingji_transcription_vs_floor_words": round(
            (ours["wall_s"] - ours["speakers_s"]) / results["floor-words"]["wall_s"], 3),
        "cer_at_least_as_good_as_floor_words": ours["cer"] <= results["floor-words"]["cer"],
        # the quick draft (an import's option): its whole job, speakers included
        "tingji_fast_vs_floor_words": round(draft["wall_s"] / floor_words, 3),
        "fast_cer_at_least_as_good_as_floor_words": draft["cer"] <= results["floor-words"]["cer"],
        "targets_met": {
            "rtf": ours["rtf"] <= TARGETS["rtf_max"],
            "peak_rss": ours["peak_rss_mb"] <= TARGETS["peak_rss_mb_max"],
            "ratio_to_fastest_plain": ratio <= TARGETS["ratio_to_fastest_plain_max"],
            "ratio_to_floor_words": (ours["wall_s"] / floor_words
                                     <= TARGETS["ratio_to_floor_words_max"]),
            "ratio_to_floor_words_fast": (draft["wall_s"] / floor_words
                                          <= TARGETS["ratio_to_floor_words_max"]
                                          and draft["cer"] <= results["floor-words"]["cer"]),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "asr.json")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--wav", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.wav)))
        return 0
    settings = Settings.load()
    stamp = header("asr", settings)
    report = {
        **stamp,
        "machine": stamp["machine"] | {"python": platform.python_version()},
        "batch_size": settings.batch_size,
        "plain_batch_size": PLAIN_BATCH_SIZE,
        "beam_size": settings.beam_size,
        "targets": TARGETS,
        "scenarios": {
            name: run_scenario(name, kinds, args.seconds)
            for name, kinds in SCENARIOS.items()
        },
    }
    write(args.out, report)
    print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
