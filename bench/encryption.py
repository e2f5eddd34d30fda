"""What encryption at rest costs: the same work on a box in the clear and on a box with its
key (unlocked), in one run.

    python bench/encryption.py [--seconds 300] [--out bench/results/encryption.json]

A recording assembled from many real clips, each used once (see bench/ready.py), and:

- **batch transcription**: imported and transcribed by the worker's job on each box (the
  sealed box decodes its sealed file through PyAV, nothing decrypted on disk), in the order
  clear, sealed, sealed, clear so that the machine's drift cancels; the mean of each;
- **the segment writer alone**: the recording's audio written by it (plain WAV
  segments / sealed logs) in blocks of 0.1 s, paced at 20x real time with the fsync interval
  scaled the same way (as many fsyncs per second of audio as on the box), four times each in
  the order clear, sealed, sealed, clear; CPU seconds per hour of audio, the latency of each
  block's write (the fsyncs included) and of each fsync alone: p50/p95;
- **the recorder**: the box's recorder as it runs (live transcript on, the same loaded
  models), fed the first ``--live-seconds`` of the recording through the file source at
  2x real time, in the order clear, sealed, sealed, clear: the process's CPU seconds per
  hour of audio (its threads, the recogniser's included) and the live lag p95;
- **web**: against the app served on a loopback port (uvicorn, as `make run`), one
  reviewer signed in, the pages read from the main database (SQLCipher's on the sealed
  box): the library, a search for a word of the transcript, the recording's page with its
  transcript; and 256 KiB range requests of the stored audio; p50/p95 of each, the two
  boxes taking turns request by request;
- **size**: the stored audio and the main database (its write-ahead log folded in), on
  disk.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ready import build  # noqa: E402
from bench.report import header, write  # noqa: E402
from bench.web import PASSWORD, free_port, percentile, serve, sign_in  # noqa: E402
from device import audio, encryption  # noqa: E402
from device.databases import open_store  # noqa: E402
from device.jobs import Runner, load_engines  # noqa: E402
from device.pipeline import import_audio  # noqa: E402
from device.settings import Settings  # noqa: E402
from device.storage import SegmentWriter  # noqa: E402

SR = audio.SAMPLE_RATE
TARGET_RATIO_MAX = 1.05
PASSPHRASE = "a benchmark passphrase"
PACE = 20.0
"""Times real time the recorder's writes are paced at."""
RANGE_BYTES = 256 * 1024


def make_box(settings: Settings, sealed: bool) -> None:
    settings.data_dir.mkdir(parents=True)
    if sealed:
        encryption.init(settings, PASSPHRASE)
        encryption.unlock_box(settings, passphrase=PASSPHRASE)
    with open_store(settings) as store:
        from device.accounts import hash_password

        store.create_user("rita", hash_password(PASSWORD), "reviewer")


def transcribe(settings: Settings, engines, wav: Path) -> tuple[float, int]:
    """Seconds the worker's job took, and the recording."""
    with open_store(settings) as store:
        recording, job = import_audio(store, settings, wav, profile="auto")
        runner = Runner(settings, engines)
        started = time.perf_counter()
        if not runner.run(store, runner.claim(store, job.id)):
            raise SystemExit(f"transcription failed: {store.get_job(job.id).error}")
        return time.perf_counter() - started, recording.id


def record(samples: np.ndarray, folder: Path, key: bytes | None) -> dict:
    """The segment writer's CPU and latencies for ``samples``, paced (``PACE``): each
    block's write, and each fsync alone (timed around ``os.fsync``)."""
    writer = SegmentWriter(folder, fsync_interval=0.5 / PACE, data_key=key)
    block = SR // 10
    writes, syncs = [], []
    fsync = os.fsync

    def timed_fsync(fd: int) -> None:
        t0 = time.perf_counter()
        fsync(fd)
        syncs.append((time.perf_counter() - t0) * 1000)

    os.fsync = timed_fsync
    try:
        cpu = time.process_time()
        started = time.monotonic()
        for n, at in enumerate(range(0, samples.size, block)):
            time.sleep(max(0.0, started + n * 0.1 / PACE - time.monotonic()))
            t0 = time.perf_counter()
            writer.write(samples[at : at + block])
            writes.append((time.perf_counter() - t0) * 1000)
        writer.close()
        cpu = time.process_time() - cpu
    finally:
        os.fsync = fsync
    return {"cpu_s": cpu, "hours": samples.size / SR / 3600, "writes": writes,
            "fsyncs": syncs, "bytes": sum(os.path.getsize(p) for p in folder.iterdir())}


LIVE_SPEED = 2.0


def record_live(settings: Settings, engines, wav: Path) -> dict:
    """The whole recorder's CPU (this process, every thread) for one recording of ``wav``."""
    from device.capture import FileSource
    from device.recorder import Recorder

    recorder = Recorder(settings, engines, live=True)
    cpu = time.process_time()
    recorder.start(FileSource(wav, speed=LIVE_SPEED), title="benchmark")
    recording = recorder.wait(3600)
    cpu = time.process_time() - cpu
    return {"cpu_s": cpu, "hours": recording.duration / 3600, "lags": recorder.live_lags}


def recorder_figures(runs: list[dict]) -> dict:
    lags = [lag for r in runs for lag in r["lags"]]
    return {"runs": len(runs),
            "cpu_s_per_hour": round(sum(r["cpu_s"] for r in runs)
                                    / sum(r["hours"] for r in runs), 1),
            "cpu_s_per_hour_each": [round(r["cpu_s"] / r["hours"], 1) for r in runs],
            "live_lag_p95_s": round(percentile(lags, 95), 2) if lags else None}


def recording(runs: list[dict]) -> dict:
    """Runs of one kind, together."""
    writes = [w for r in runs for w in r["writes"]]
    syncs = [f for r in runs for f in r["fsyncs"]]
    return {"runs": len(runs),
            "cpu_s_per_hour": round(sum(r["cpu_s"] for r in runs)
                                    / sum(r["hours"] for r in runs), 2),
            "write_ms_p50": round(percentile(writes, 50), 3),
            "write_ms_p95": round(percentile(writes, 95), 3),
            "write_ms_max": round(max(writes), 3),
            "fsyncs": len(syncs),
            "fsync_ms_p50": round(percentile(syncs, 50), 3),
            "fsync_ms_p95": round(percentile(syncs, 95), 3),
            "bytes": runs[0]["bytes"]}


PAGES = ("library", "search", "recording", "audio_range_256k")


def _wait_for(base: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(base + "/health", timeout=5)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"{base} never answered")


def web(boxes: dict[str, Settings], recordings: dict[str, int], word: str,
        requests: int = 200) -> dict:
    """p50/p95 of each page on each box, the boxes served at once and asked in turn."""
    servers, clients, sizes = {}, {}, {}
    try:
        for name, settings in boxes.items():
            port = free_port()
            servers[name] = serve(settings.data_dir, port)
            _wait_for(f"http://127.0.0.1:{port}")
            clients[name] = sign_in(f"http://127.0.0.1:{port}")
            audio_url = f"/recordings/{recordings[name]}/audio"
            sizes[name] = int(clients[name].get(audio_url, headers={"Range": "bytes=0-0"})
                              .headers["content-range"].rsplit("/", 1)[1])
        rng = random.Random(7)
        timings = {name: {page: [] for page in PAGES} for name in boxes}
        for _ in range(requests):
            start = rng.randrange(0, min(sizes.values()) - RANGE_BYTES)
            for page in PAGES:
                for name, client in clients.items():
                    url, headers, expected = {
                        "library": ("/", {}, 200),
                        "search": ("/?q=" + word, {}, 200),
                        "recording": (f"/recordings/{recordings[name]}", {}, 200),
                        "audio_range_256k": (
                            f"/recordings/{recordings[name]}/audio",
                            {"Range": f"bytes={start}-{start + RANGE_BYTES - 1}"}, 206),
                    }[page]
                    t0 = time.perf_counter()
                    response = client.get(url, headers=headers)
                    timings[name][page].append((time.perf_counter() - t0) * 1000)
                    if response.status_code != expected:
                        raise SystemExit(f"{page} on the {name} box: HTTP "
                                         f"{response.status_code}")
        return {name: {page: {"requests": requests,
                              "p50_ms": round(percentile(values, 50), 2),
                              "p95_ms": round(percentile(values, 95), 2)}
                       for page, values in pages.items()}
                for name, pages in timings.items()}
    finally:
        for client in clients.values():
            client.close()
        for server in servers.values():
            server.terminate()
            server.wait(30)


def database_bytes(settings: Settings) -> int:
    """The main database's size with its write-ahead log folded in."""
    with open_store(settings) as store:
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return settings.database_path.stat().st_size


def a_word(settings: Settings, recording_id: int) -> str:
    """A word of the transcript that a search finds."""
    with open_store(settings) as store:
        words = [w for s in store.segments(recording_id) for w in s.text.split()
                 if len(w) >= 4 and w.isalpha()]
    return max(set(words), key=words.count) if words else "the"


def ratio(sealed: float, clear: float) -> float:
    return round(sealed / clear, 3) if clear else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--live-seconds", type=float, default=120.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/encryption.json")
    args = parser.parse_args()
    settings = Settings.load()
    engines = load_engines(settings)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        wav = scratch / "recording.wav"
        build(wav, args.seconds)
        boxes = {}
        for name in ("clear", "sealed"):
            boxes[name] = Settings(data_dir=scratch / name, models_dir=settings.models_dir,
                                   auto_summarize=False)
            make_box(boxes[name], sealed=name == "sealed")
        try:
            seconds: dict[str, list[float]] = {"clear": [], "sealed": []}
            recordings = {}
            for name in ("clear", "sealed", "sealed", "clear"):
                took, recordings[name] = transcribe(boxes[name], engines, wav)
                seconds[name].append(took)
                print(f"transcription, {name}: {took:.1f} s", file=sys.stderr, flush=True)
            samples = audio.decode(wav)
            runs: dict[str, list[dict]] = {"clear": [], "sealed": []}
            for n, name in enumerate(("clear", "sealed", "sealed", "clear") * 2):
                runs[name].append(record(samples, scratch / f"capture-{n}",
                                         None if name == "clear" else os.urandom(32)))
            writes = {name: recording(values) for name, values in runs.items()}
            excerpt = scratch / "excerpt.wav"
            audio.write_wav(excerpt, samples[: int(args.live_seconds * SR)])
            lives: dict[str, list[dict]] = {"clear": [], "sealed": []}
            for name in ("clear", "sealed", "sealed", "clear"):
                lives[name].append(record_live(boxes[name], engines, excerpt))
                print(f"recorder, {name}: {lives[name][-1]['cpu_s']:.1f} s CPU",
                      file=sys.stderr, flush=True)
            recorders = {name: recorder_figures(values) for name, values in lives.items()}
            word = a_word(boxes["clear"], recordings["clear"])
            pages = web(boxes, recordings, word)
            sizes = {name: {"audio_bytes": sum(p.stat().st_size for p in
                                               boxes[name].audio_dir.rglob("*") if p.is_file()),
                            "database_bytes": database_bytes(boxes[name])}
                     for name in ("clear", "sealed")}
            if encryption.in_the_clear(boxes["sealed"].database_path):
                raise SystemExit("the sealed box's database is in the clear")
        finally:
            encryption.lock_box(boxes["sealed"])
    mean = {name: float(np.mean(values)) for name, values in seconds.items()}
    report = header("encryption", settings) | {
        "recording_seconds": round(samples.size / SR, 1),
        "target_ratio_max": TARGET_RATIO_MAX,
        "transcription_s": {name: [round(v, 2) for v in values]
                            for name, values in seconds.items()},
        "recorder": recorders,
        "recording": writes,
        "web": pages,
        "search_word": word,
        "size": sizes,
        "ratios": {
            "transcription": ratio(mean["sealed"], mean["clear"]),
            "recording_cpu": ratio(recorders["sealed"]["cpu_s_per_hour"],
                                   recorders["clear"]["cpu_s_per_hour"]),
            "segment_writer_cpu": ratio(writes["sealed"]["cpu_s_per_hour"],
                                        writes["clear"]["cpu_s_per_hour"]),
            "recording_write_p95": ratio(writes["sealed"]["write_ms_p95"],
                                         writes["clear"]["write_ms_p95"]),
            "recording_fsync_p95": ratio(writes["sealed"]["fsync_ms_p95"],
                                         writes["clear"]["fsync_ms_p95"]),
            **{f"web_{page}_p95": ratio(pages["sealed"][page]["p95_ms"],
                                        pages["clear"][page]["p95_ms"]) for page in PAGES},
            "audio_size": ratio(sizes["sealed"]["audio_bytes"], sizes["clear"]["audio_bytes"]),
            "database_size": ratio(sizes["sealed"]["database_bytes"],
                                   sizes["clear"]["database_bytes"]),
        },
    }
    write(args.out, report)
    print(report["ratios"], file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
