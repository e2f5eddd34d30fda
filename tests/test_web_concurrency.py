"""The box under concurrent load over real HTTP (uvicorn on 127.0.0.1): ten reviewers
editing one recording at once, and requests served while a large upload streams in."""

from __future__ import annotations

import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import uvicorn

from device.databases import open_store
from tests.webutil import add_user, setup_admin, sign_in, stored_transcript
from web.app import create_app

CLIENTS, EDITS = 10, 100
pytestmark = pytest.mark.slow  # real servers


@pytest.fixture
def server(settings):
    """The app served by uvicorn in a thread on a free loopback port; stopped afterwards."""
    app = create_app(settings)
    admin = setup_admin(app)
    add_user(admin, "rita", "reviewer")
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                            lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start within 30 s"
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


def signed_in(base: str) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=base, timeout=60)
    return client, sign_in(client, "rita")


def test_ten_clients_times_a_hundred_edits(server, settings):
    rec = stored_transcript(settings, texts=[f"segment {i}" for i in range(5)])
    with open_store(settings) as store:
        ids = [s.id for s in store.segments(rec)]

    def reviewer(number: int) -> dict:
        client, csrf = signed_in(server)
        revisions = {sid: 0 for sid in ids}
        acknowledged, conflicts, errors = [], 0, []
        for i in range(EDITS):
            sid = ids[(number + i) % len(ids)]
            text = f"client {number} edit {i}"
            response = client.patch(f"/api/segments/{sid}", headers={"X-CSRF-Token": csrf},
                                    json={"text": text, "revision": revisions[sid]})
            if response.status_code == 200:
                revisions[sid] = response.json()["revision"]
                acknowledged.append((sid, text, revisions[sid]))
            elif response.status_code == 409:
                conflicts += 1
                revisions[sid] = response.json()["current"][0]["revision"]
            else:
                errors.append((response.status_code, response.text[:200]))
        client.close()
        return {"acknowledged": acknowledged, "conflicts": conflicts, "errors": errors}

    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(reviewer, range(CLIENTS)))

    errors = [e for r in results for e in r["errors"]]
    assert errors == []
    acknowledged = [a for r in results for a in r["acknowledged"]]
    conflicts = sum(r["conflicts"] for r in results)
    assert len(acknowledged) + conflicts == CLIENTS * EDITS
    assert conflicts > 0 and len(acknowledged) > 0
    with open_store(settings) as store:
        history = {(r.after[0]["id"], r.after[0]["text"], r.after[0]["revision"])
                   for r in store.revisions(rec, limit=100_000) if r.kind == "edit"}
        final = {s.id: (s.text, s.revision) for s in store.segments(rec)}
    assert set(acknowledged) <= history  # every acknowledged edit is in the history
    assert len(history) == len(acknowledged)  # and nothing else was written
    for sid in ids:  # the stored text is the last acknowledged edit of each segment
        last = max((a for a in acknowledged if a[0] == sid), key=lambda a: a[2])
        assert final[sid] == (last[1], last[2])
    # the audit trail holds each of the 1,000 edits once, with its outcome, and verifies
    from device.audit import load_key, verify

    with open_store(settings) as store:
        edits = store.audit_entries(action="edit_segment")
        assert len(edits) == CLIENTS * EDITS
        assert sum(e.details["status"] == 200 for e in edits) == len(acknowledged)
        assert sum(e.details["status"] == 409 for e in edits) == conflicts
        assert verify(store, load_key(settings).public_key()).ok


def _wav_header(data_bytes: int, rate: int = 48_000, channels: int = 2) -> bytes:
    block = 2 * channels
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block, 16)
            + b"data" + struct.pack("<I", data_bytes))


def test_a_large_upload_does_not_stall_other_requests(server, settings):
    """Receiving, fsyncing and copying an upload of 500 MB into the audio store run off the
    event loop: while the box fsyncs and copies the file after its last byte arrived, the
    health check and a library page go on answering, each in a fraction of that time (a
    blocked event loop would hold them for all of it)."""
    size, block = 500 * 2**20, bytes(2**20)
    uploader, csrf = signed_in(server)
    prober, _ = signed_in(server)
    uploaded: dict[str, float] = {}

    def body():
        yield _wav_header(size)
        for _ in range(size // len(block)):
            yield block
        uploaded["sent"] = time.monotonic()

    def upload():
        response = uploader.put("/api/upload", params={"filename": "long.wav"}, content=body(),
                                headers={"X-CSRF-Token": csrf,
                                         "Content-Type": "application/octet-stream"})
        uploaded["answered"], uploaded["status"] = time.monotonic(), response.status_code

    thread = threading.Thread(target=upload)
    thread.start()
    answers = []
    deadline = time.monotonic() + 300
    while thread.is_alive() and time.monotonic() < deadline:
        for url in ("/health", "/"):
            started = time.monotonic()
            status = prober.get(url).status_code
            answers.append((url, status, started, time.monotonic()))
    thread.join(timeout=60)
    assert uploaded.get("status") == 200, uploaded
    with open_store(settings) as store:
        [recording] = store.list_recordings()
    assert (settings.audio_dir / recording.audio_file).stat().st_size == size + 44
    assert len(answers) >= 20 and {status for _, status, _, _ in answers} == {200}
    # The time from the last byte sent to the answer is mostly the box's fsync and copy
    # (2.8-5.6 s here); answers then come ten a second at least (over 200 here; under 2
    # with the loop blocked), none taking a quarter of it (0.1 s here; 5.5 s blocked).
    sent, answered = uploaded["sent"], uploaded["answered"]
    meanwhile = [a for a in answers if sent <= a[2] and a[3] <= answered]
    assert len(meanwhile) >= max(10, 10 * (answered - sent)), (answered - sent, len(meanwhile))
    slowest = max(answers, key=lambda answer: answer[3] - answer[2])
    assert slowest[3] - slowest[2] < max(0.2, (answered - sent) / 4), (slowest, answered - sent)


def test_a_declared_huge_body_is_refused_before_a_byte_of_it_is_sent(server):
    """The box answers 413 to the headers alone: nothing of the 400 MB is read."""
    import socket
    from urllib.parse import urlsplit

    address = urlsplit(server)
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(b"POST /api/record/start HTTP/1.1\r\nHost: box\r\n"
                     b"Content-Type: text/plain\r\nContent-Length: 419430400\r\n\r\n")
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]


def test_live_event_streams_are_capped_per_user_and_freed_when_closed(server, settings):
    """Each open stream polled every 50 ms (1,500 of them used 72 % of a core), with no
    limit; now a user may hold four, and a stream waits for events instead of polling."""
    from web.routers.record import STREAMS_PER_USER

    client, _ = signed_in(server)
    streams, lines = [], []  # an iterator dropped closes its stream: keep them
    try:
        for _ in range(STREAMS_PER_USER):
            stream = client.stream("GET", "/api/record/events", timeout=60)
            response = stream.__enter__()
            streams.append(stream)
            assert response.status_code == 200
            lines.append(response.iter_lines())
            assert next(lines[-1]) == "event: status"
        with client.stream("GET", "/api/record/events", timeout=60) as refused:
            assert refused.status_code == 429
    finally:
        for stream in streams:
            stream.__exit__(None, None, None)

    def reopened() -> bool:  # the server notices the closed streams
        with client.stream("GET", "/api/record/events", timeout=60) as response:
            return response.status_code == 200

    deadline = time.monotonic() + 30
    while not reopened():
        assert time.monotonic() < deadline, "closed streams were never freed"
        time.sleep(0.2)
