"""The web app: health, the library page, and escaping of transcript text."""

from __future__ import annotations

from fastapi.testclient import TestClient

from device.records import Segment
from device.store import Store
from web.app import create_app


def test_health_reports_ok_with_the_model_installed(settings):
    client = TestClient(create_app(settings))
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["asr_model"]["status"] == "installed"
    assert body["schema_version"] >= 1


def test_health_is_503_without_the_model(settings, tmp_path):
    client = TestClient(create_app(settings.replace(models_dir=tmp_path / "none")))
    response = client.get("/health")
    assert response.status_code == 503 and response.json()["asr_model"]["status"] == "missing"


def test_library_lists_recordings_and_escapes_their_text(settings):
    with Store(settings.database_path) as store:
        rec = store.create_recording("<script>alert(1)</script>", "x.wav")
        job = store.claim(1, 0.0, store.enqueue("transcribe", rec.id).id)
        store.complete_transcription(job.id, rec.id, [Segment(0, 1, "<b>预算</b> 讨论")],
                                     language="zh", language_probability=1.0, duration=1.0,
                                     model_id="whisper-base")
    client = TestClient(create_app(settings))
    page = client.get("/").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
    hits = client.get("/", params={"q": "预算"}).text
    assert "1 hit(s)" in hits and "&lt;b&gt;预算&lt;/b&gt;" in hits
