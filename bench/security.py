"""Security benchmark: what the audit trail costs.

    python bench/security.py [--entries 1000000] [--out bench/results/security.json]

- append: the time one audited action adds (an entry appended in its own write transaction,
  fsync'd, as a request's is), over 2,000 appends, with a signed head every 100;
- request: p50/p95 of an audited page (a recording's page) against the same page with the
  audit writer turned off, in the same run (in-process client, 300 requests each);
- verify: ``audit verify`` over a trail of ``--entries`` entries (built in one transaction
  with the same hash chain and a signed head every 100 entries; target ≤ 30 s for 1,000,000);
- TLS: the web benchmark's pages (library, search, a recording) under 10 concurrent clients
  (``bench/web.py``'s database, 200 recordings and 20 hours of transcript here), served over
  plain HTTP on 127.0.0.1 and over HTTPS with the box's own certificate on 127.0.0.2, one
  after the other in the same run (target: p95 over TLS ≤ +10 %).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import header, write  # noqa: E402
from device.databases import open_store  # noqa: E402
from device.settings import Settings  # noqa: E402

TARGETS = {"verify_1m_seconds_max": 30.0, "tls_p95_ratio_max": 1.10}


def append_cost(settings: Settings, count: int = 2000) -> dict:
    from device.audit import Auditor

    auditor = Auditor(settings)
    times = []
    with open_store(settings) as store:
        for n in range(count):
            started = time.perf_counter()
            auditor.record(store, "view_recording", object=f"recording:{n % 50}",
                           address="192.0.2.8", details={"status": 200})
            times.append(time.perf_counter() - started)
    return {"appends": count, "p50_ms": round(statistics.median(times) * 1000, 3),
            "p95_ms": round(sorted(times)[int(0.95 * count)] * 1000, 3)}


def request_cost(settings: Settings, count: int = 300) -> dict:
    from fastapi.testclient import TestClient

    from device.accounts import hash_password
    from web.app import create_app
    from web.security import SESSION_COOKIE, start_session

    app = create_app(settings)
    with open_store(settings) as store:
        user = store.create_user("bench", hash_password("long enough password"), "reviewer")
        rec = store.create_recording("会议", "a.wav")
        cookie = start_session(store, user)
    client = TestClient(app)
    client.cookies.set(SESSION_COOKIE, cookie)

    def timed() -> list[float]:
        out = []
        for _ in range(count):
            started = time.perf_counter()
            assert client.get(f"/recordings/{rec.id}").status_code == 200
            out.append(time.perf_counter() - started)
        return sorted(out)

    timed()  # warm
    audited = timed()
    auditor = app.state.auditor
    app.state.auditor = type("Off", (), {"record": lambda *a, **k: None})()
    plain = timed()
    app.state.auditor = auditor

    def stats(xs: list[float]) -> dict:
        return {"p50_ms": round(xs[len(xs) // 2] * 1000, 2),
                "p95_ms": round(xs[int(0.95 * len(xs))] * 1000, 2)}

    return {"requests": count, "audited": stats(audited), "without_audit": stats(plain),
            "p95_ratio": round(audited[int(0.95 * count)] / plain[int(0.95 * count)], 3)}


def verify_time(settings: Settings, entries: int) -> dict:
    from device.audit import HEAD_EVERY, head_message, load_key, verify
    from device.store._base import now
    from device.store.audit import GENESIS, chain_hash

    key = load_key(settings)
    started = time.perf_counter()
    with open_store(settings) as store:
        store.trail.execute("DELETE FROM audit")
        store.trail.execute("DELETE FROM audit_heads")
        prev, rows, heads = GENESIS, [], []
        stamp = now()
        for n in range(1, entries + 1):
            entry = {"id": n, "at": stamp, "user_id": 1, "username": "rita",
                     "address": "192.0.2.8", "action": "view_recording",
                     "object": f"recording:{n % 997}", "details": {"status": 200}}
            digest = chain_hash(prev, entry)
            rows.append((n, stamp, 1, "rita", "192.0.2.8", "view_recording",
                         entry["object"], json.dumps(entry["details"]), prev, digest))
            if n % HEAD_EVERY == 0:
                heads.append((n, digest, key.sign(head_message(n, digest)).hex(), stamp,
                              "bench"))
            prev = digest
        with store.transaction(store.trail):
            store.trail.conn.executemany("INSERT INTO audit VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
            store.trail.conn.executemany(
                "INSERT INTO audit_heads (entry_id, hash, signature, at, reason) "
                "VALUES (?,?,?,?,?)", heads)
        built = time.perf_counter() - started
        started = time.perf_counter()
        result = verify(store, key.public_key())
        seconds = time.perf_counter() - started
    assert result.ok and result.entries == entries, result
    return {"entries": entries, "heads": len(heads), "build_seconds": round(built, 1),
            "verify_seconds": round(seconds, 2)}


def tls_cost(recordings: int = 200, hours: float = 20.0, clients: int = 10,
             rounds: int = 20) -> dict:
    import httpx

    from bench.web import build, free_port, percentile, run_load, serve, sign_in
    from device import tls

    data_dir = ROOT / "bench" / "work" / "web-security"
    build(data_dir, recordings, hours)
    cert = tls.make_self_signed(Settings(data_dir=data_dir, host="127.0.0.2"))
    out = {"database": {"recordings": recordings, "transcript_hours": hours},
           "clients": clients, "rounds_per_client": rounds,
           "phases": "plain, TLS, plain, TLS (each server warmed first)"}
    timed: dict[str, dict[str, list[float]]] = {"plain": {}, "tls": {}}
    for name, host, secure in [("plain", "127.0.0.1", False), ("tls", "127.0.0.2", True)] * 2:
        port = free_port()
        server = serve(data_dir, port, host, (cert.cert_file, cert.key_file) if secure else None)
        scheme = "https" if secure else "http"
        base, trust = f"{scheme}://{host}:{port}", str(cert.cert_file) if secure else None
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    sign_in(base, trust).get("/").raise_for_status()
                    break
                except httpx.HTTPError:
                    time.sleep(0.3)
            for page in ("/", "/?q=预算", "/recordings/1"):
                sign_in(base, trust).get(page).raise_for_status()
            timings, _ = run_load(base, clients, rounds, recordings, trust=trust)
        finally:
            server.terminate()
            server.wait(30)
        for page, values in timings.items():
            timed[name].setdefault(page, []).extend(values)
    for name, pages in timed.items():
        out[name] = {page: {"p50_ms": round(statistics.median(v), 1),
                            "p95_ms": round(percentile(v, 95), 1)} for page, v in pages.items()}
        print(name, out[name], file=sys.stderr)
    out["p95_ratio"] = {page: round(out["tls"][page]["p95_ms"] / out["plain"][page]["p95_ms"],
                                    3) for page in out["plain"]}
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path,
                        default=ROOT / "bench" / "results" / "security.json")
    args = parser.parse_args()
    base = Settings.load()
    report = {**header("security", base), "targets": TARGETS}
    report["tls"] = tls_cost()
    with tempfile.TemporaryDirectory() as work:
        settings = base.replace(data_dir=Path(work) / "append")
        report["append"] = append_cost(settings)
        print(report["append"], file=sys.stderr)
        report["request"] = request_cost(base.replace(data_dir=Path(work) / "web"))
        print(report["request"], file=sys.stderr)
        report["verify"] = verify_time(base.replace(data_dir=Path(work) / "verify"),
                                       args.entries)
        print(report["verify"], file=sys.stderr)
    write(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
