"""Web benchmark: library, search and recording pages under 10 concurrent clients.

    python bench/web.py [--recordings 1000] [--hours 100] [--clients 10] [--requests 60]
                        [--out bench/results/web.json]

A database of ``--recordings`` recordings holding ``--hours`` of transcript (segments with
word timings, half Chinese, half English; synthetic meeting sentences) is built once under
bench/work/web/.  The app runs in its own process (uvicorn, as `make run` serves it) on a
loopback port; the clients (separate processes, like browsers), signed in as a reviewer,
each request every page type in turn.
Baselines, measured in the same run by the same 10 clients in a phase of their own: a static
file and /health (a small JSON answer that reads the database).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import header, write  # noqa: E402
from bench.summary import transcript  # noqa: E402
from device.databases import open_store  # noqa: E402
from device.records import Segment, Word  # noqa: E402
from device.settings import Settings  # noqa: E402

TARGET_P95_MS = 100
PASSWORD = "benchmark password"
SEARCH_TERMS = ["预算", "供应商合同", "王经理", "系统升级", "budget", "vendor contract",
                "Priya", "backup servers", "客户投诉", "the audit"]


def build(data_dir: Path, recordings: int, hours: float) -> dict:
    """The benchmark database (kept between runs when its size matches)."""
    marker = data_dir / "built.json"
    wanted = {"recordings": recordings, "hours": hours}
    if marker.exists() and json.loads(marker.read_text()).get("wanted") == wanted:
        return json.loads(marker.read_text())
    if data_dir.exists():
        import shutil

        shutil.rmtree(data_dir)
    settings = Settings(data_dir=data_dir)
    seconds_each = hours * 3600 / recordings
    segments_total = words_total = 0
    started = time.perf_counter()
    with open_store(settings) as store:
        from device.accounts import hash_password

        store.create_user("rita", hash_password(PASSWORD), "reviewer")
        for n in range(recordings):
            language = "zh" if n % 2 == 0 else "en"
            per_char = 4.0 / 25 if language == "zh" else 4.0 / 60
            body = transcript(language, int(seconds_each / 4.5 * 25 * (1 if language == "zh"
                                                                      else 2.4)), seed=n)
            segments = [_with_words(s, language, per_char) for s in body
                        if s.end <= seconds_each]
            rec = store.create_recording(f"Meeting {n + 1}", f"meeting-{n + 1}.wav")
            job = store.claim(1, 0.0, store.enqueue("transcribe", rec.id).id)
            store.complete_transcription(job.id, rec.id, segments, language=language,
                                         duration=seconds_each, model_id="whisper-base",
                                         profile="auto")
            segments_total += len(segments)
            words_total += sum(len(s.words) for s in segments)
    info = {"wanted": wanted, "segments": segments_total, "words": words_total,
            "build_seconds": round(time.perf_counter() - started, 1),
            "database_mb": round(settings.database_path.stat().st_size / 1e6, 1)}
    marker.write_text(json.dumps(info))
    return info


def _with_words(segment: Segment, language: str, per_char: float) -> Segment:
    tokens = list(segment.text) if language == "zh" else [
        " " + w for w in segment.text.split()]
    t, words = segment.start, []
    for token in tokens:
        length = len(token.strip()) * per_char
        words.append(Word(round(t, 2), round(t + length, 2), token, 0.9))
        t += length
    return Segment(segment.start, segment.end, segment.text, language=language,
                   words=tuple(words))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(data_dir: Path, port: int, host: str = "127.0.0.1",
          tls: tuple[Path, Path] | None = None) -> subprocess.Popen:
    """The app in its own process; with ``tls`` (certificate, key) over HTTPS."""
    ssl = (f", ssl_certfile={str(tls[0])!r}, ssl_keyfile={str(tls[1])!r}" if tls else "")
    code = ("import pathlib, uvicorn; from device.settings import Settings; "
            "from web.app import create_app; "
            f"uvicorn.run(create_app(Settings(data_dir=pathlib.Path({str(data_dir)!r}))), "
            f"host={host!r}, port={port}, log_level='warning'{ssl})")
    env = {**os.environ, "TINGJI_AUTO_SUMMARIZE": "0"}
    log = open(data_dir / "server.log", "wb")
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)


def sign_in(base: str, trust: str | None = None) -> httpx.Client:
    """A signed-in client; ``trust``: the only certificate an HTTPS server may show."""
    import re
    import ssl

    verify = ssl.create_default_context(cafile=trust) if trust else True
    client = httpx.Client(base_url=base, timeout=60, verify=verify)
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    response = client.post("/login", data={"username": "rita", "password": PASSWORD,
                                           "csrf_token": token})
    if response.status_code != 303:
        raise SystemExit(f"sign-in failed: {response.status_code}")
    return client


PAGES = {
    "library": lambda rng, n: "/",
    "search": lambda rng, n: "/?q=" + rng.choice(SEARCH_TERMS),
    "recording": lambda rng, n: f"/recordings/{rng.randint(1, n)}",
}
BASELINES = {  # the same clients and concurrency, in a phase of their own
    "baseline_static_file": lambda rng, n: "/static/style.css",
    "baseline_health_json": lambda rng, n: "/health",
}


def client_process(base: str, number: int, rounds: int, recordings: int, start_at: float,
                   baseline: bool, trust: str | None = None) -> dict[str, list[float]]:
    """One client (its own process, like a browser): every page type in turn, timed."""
    rng = random.Random(number)
    client = sign_in(base, trust)
    pages = BASELINES if baseline else PAGES
    timings: dict[str, list[float]] = {name: [] for name in pages}
    time.sleep(max(0.0, start_at - time.time()))
    for _ in range(rounds):
        for name, url in pages.items():
            t0 = time.perf_counter()
            response = client.get(url(rng, recordings))
            elapsed = (time.perf_counter() - t0) * 1000
            if response.status_code >= 400:
                raise SystemExit(f"{name}: HTTP {response.status_code}")
            timings[name].append(elapsed)
    client.close()
    return timings


def run_load(base: str, clients: int, rounds: int, recordings: int,
             baseline: bool = False, trust: str | None = None
             ) -> tuple[dict[str, list[float]], float]:
    """(timings per page, wall seconds) of ``clients`` concurrent client processes."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    start_at = time.time() + 5  # every client signed in before the clock starts
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(clients, mp_context=context) as pool:
        futures = [pool.submit(client_process, base, n, rounds, recordings, start_at, baseline,
                               trust) for n in range(clients)]
        results = [f.result() for f in futures]
    wall = time.time() - start_at
    names = BASELINES if baseline else PAGES
    return {name: [t for r in results for t in r[name]] for name in names}, wall


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recordings", type=int, default=1000)
    parser.add_argument("--hours", type=float, default=100.0)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--requests", type=int, default=60, help="rounds per client")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/web.json")
    args = parser.parse_args()

    data_dir = ROOT / "bench/work/web"
    database = build(data_dir, args.recordings, args.hours)
    print(f"database: {database}", flush=True)
    port = free_port()
    server = serve(data_dir, port)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if httpx.get(base + "/static/style.css", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            raise SystemExit(f"the server did not start: see {data_dir / 'server.log'}")
        warm = sign_in(base)
        for path in ("/", "/?q=预算", "/recordings/1"):
            warm.get(path).raise_for_status()
        cpu_before = process_cpu(server.pid)
        timings, wall = run_load(base, args.clients, args.requests, args.recordings)
        server_cpu = process_cpu(server.pid) - cpu_before
        baselines, _ = run_load(base, args.clients, args.requests, args.recordings,
                                baseline=True)
    finally:
        server.terminate()
        server.wait(30)
    timings.update(baselines)
    results = {name: {"requests": len(v), "p50_ms": round(statistics.median(v), 1),
                      "p95_ms": round(percentile(v, 95), 1), "max_ms": round(max(v), 1)}
               for name, v in timings.items()}
    pages = ("library", "search", "recording")
    report = {
        **header("web", Settings.load()),
        "database": {"recordings": args.recordings, "transcript_hours": args.hours,
                     **{k: v for k, v in database.items() if k != "wanted"},
                     "content": "synthetic meeting sentences, half Chinese, half English, "
                                "with word timings"},
        "load": {"clients": args.clients, "rounds_per_client": args.requests,
                 "wall_seconds": round(wall, 1),
                 "page_requests_per_second": round(
                     sum(len(timings[p]) for p in PAGES) / wall, 1),
                 "server_cpu_seconds": round(server_cpu, 1),
                 "server_cpu_ms_per_page": round(
                     server_cpu * 1000 / sum(len(timings[p]) for p in PAGES), 2)},
        "results": results,
        "target": {"p95_ms_max": TARGET_P95_MS,
                   "met": all(results[p]["p95_ms"] <= TARGET_P95_MS for p in pages)},
    }
    write(args.out, report)
    print(json.dumps(report["results"], indent=2))
    print(f"target p95 <= {TARGET_P95_MS} ms: {'met' if report['target']['met'] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
