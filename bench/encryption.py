"""What encryption at rest costs: the same work on a box in the clear and on a box with its
key (unlocked), in one run.

    python bench/encryption.py [--seconds 300] [--out bench/results/encryption.json]

A recording assembled from many real clips, each used once (see bench/ready.py), and:

- **batch transcription**: imported and transcribed by the worker's job on each box (the
  sealed box decodes its sealed file through PyAV, nothing decrypted on disk), in the order
  clear, sealed, sealed, clear so that the machine's drift cancels; the mean of each;
- **recording**: the recording's audio written by the recorder's segment writer (plain WAV
  segments / sealed logs) in blocks of 0.1 s, paced at 20x real time with the fsync interval
  scaled the same way (as many fsyncs per second of audio as on the box), four times each in
  the order clear, sealed, sealed, clear; CPU seconds per hour of audio, the latency of each
  block's write (the fsyncs included) and of each fsync alone: p50/p95;
- **playback**: 256 KiB range requests of the stored audio against the app served on a
  loopback port (uvicorn, as `make run`), one reviewer signed in: p50/p95;
- **size**: the stored audio and the database, on disk.

The main database is not encrypted yet (docs/architecture.md): its pages (library, search,
recording) and its size cost the same on both boxes and are not measured here.
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
from device.jobs import Runner, load_engines  # noqa: E402
from device.pipeline import import_audio  # noqa: E402
from device.settings import Settings  # noqa: E402
from device.storage import SegmentWriter  # noqa: E402
from device.store import Store  # noqa: E402

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
    with Store(settings.database_path) as store:
        from device.accounts import hash_password

        store.create_user("rita", hash_password(PASSWORD), "reviewer")


def transcribe(settings: Settings, engines, wav: Path) -> tuple[float, int]:
    """Seconds the worker's job took, and the recording."""
    with Store(settings.database_path) as store:
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


def playback(settings: Settings, recording_id: int, requests: int = 200) -> dict:
    port = free_port()
    server = serve(settings.data_dir, port)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(base + "/health", timeout=5)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        client = sign_in(base)
        url = f"/recordings/{recording_id}/audio"
        size = int(client.get(url, headers={"Range": "bytes=0-0"}).headers[
            "content-range"].rsplit("/", 1)[1])
        rng = random.Random(7)
        timings = []
        for _ in range(requests):
            start = rng.randrange(0, size - RANGE_BYTES)
            t0 = time.perf_counter()
            wanted = f"bytes={start}-{start + RANGE_BYTES - 1}"
            response = client.get(url, headers={"Range": wanted})
            timings.append((time.perf_counter() - t0) * 1000)
            if response.status_code != 206 or len(response.content) != RANGE_BYTES:
                raise SystemExit(f"range request: HTTP {response.status_code}")
        client.close()
        return {"requests": requests, "p50_ms": round(percentile(timings, 50), 2),
                "p95_ms": round(percentile(timings, 95), 2)}
    finally:
        server.terminate()
        server.wait(30)


def ratio(sealed: float, clear: float) -> float:
    return round(sealed / clear, 3) if clear else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=300.0)
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
            plays = {name: playback(boxes[name], recordings[name])
                     for name in ("clear", "sealed")}
            sizes = {name: {"audio_bytes": sum(p.stat().st_size for p in
                                               boxes[name].audio_dir.rglob("*") if p.is_file()),
                            "database_bytes": boxes[name].database_path.stat().st_size}
                     for name in ("clear", "sealed")}
        finally:
            encryption.lock_box(boxes["sealed"])
    mean = {name: float(np.mean(values)) for name, values in seconds.items()}
    report = header("encryption", settings) | {
        "recording_seconds": round(samples.size / SR, 1),
        "target_ratio_max": TARGET_RATIO_MAX,
        "transcription_s": {name: [round(v, 2) for v in values]
                            for name, values in seconds.items()},
        "recording": writes,
        "playback_range_256k": plays,
        "size": sizes,
        "ratios": {
            "transcription": ratio(mean["sealed"], mean["clear"]),
            "recording_cpu": ratio(writes["sealed"]["cpu_s_per_hour"],
                                   writes["clear"]["cpu_s_per_hour"]),
            "recording_write_p95": ratio(writes["sealed"]["write_ms_p95"],
                                         writes["clear"]["write_ms_p95"]),
            "recording_fsync_p95": ratio(writes["sealed"]["fsync_ms_p95"],
                                         writes["clear"]["fsync_ms_p95"]),
            "playback_p95": ratio(plays["sealed"]["p95_ms"], plays["clear"]["p95_ms"]),
            "audio_size": ratio(sizes["sealed"]["audio_bytes"], sizes["clear"]["audio_bytes"]),
        },
        "not_measured": "the main database is not encrypted yet: library, search and "
                        "recording pages and its size are the same on both boxes",
    }
    write(args.out, report)
    print(report["ratios"], file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
