"""The aarch64 check (`make arm64-check`): what runs inside the emulated arm64 Debian, and the
report that compares it with this machine.

    python bench/arm64.py inside --speech DIR --out FILE    # in the arm64 system
    python bench/arm64.py report --speech DIR --arm64 FILE  # here: x86_64 texts, the JSON

Inside: `make test-fast`, a transcription of every clip of ``--speech`` (the CLI, as a user
runs it), a summary of one transcript with the 0.5B model, and the appliance started as
`make run` starts it, answering /health and a signed-in library page.  Timings are under
qemu's emulation: they say that it runs, not how fast a board is (docs/arm64.md).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUMMARY_MODEL = "qwen2.5-coder-0.5b-instruct"
PASSWORD = "an arm64 check password"


def _run(command: list[str], env: dict | None = None, timeout: float = 3600,
         stdin: str | None = None) -> tuple[int, str, float]:
    started = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, env={**os.environ, **(env or {})},
                          input=stdin, capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout + done.stderr, round(time.monotonic() - started, 1)


def clips(speech: Path) -> list[dict]:
    with (speech / "manifest.tsv").open(encoding="utf-8") as stream:
        return list(csv.DictReader(stream, delimiter="\t"))


def transcribe_all(speech: Path, data_dir: Path) -> dict[str, dict]:
    """Every clip transcribed as `python -m device transcribe` does (import, then the job
    run here), in one process: under emulation, loading Python's libraries and the models
    takes longer than a short clip's transcription."""
    code, output, seconds = _run([sys.executable, str(Path(__file__)), "transcribe",
                                  "--speech", str(speech), "--out", str(data_dir / "t.json")],
                                 {"TINGJI_DATA_DIR": str(data_dir),
                                  "TINGJI_AUTO_SUMMARIZE": "0"})
    if code != 0:
        return {"error": {"ok": False, "error": output[-2000:], "seconds": seconds}}
    return json.loads((data_dir / "t.json").read_text(encoding="utf-8"))


def transcribe_here(speech: Path, out: Path) -> int:
    from device.cli.transcripts import _run_here
    from device.jobs import Runner
    from device.pipeline import import_audio
    from device.settings import Settings
    from device.store import Store

    settings = Settings.load()
    started = time.monotonic()
    runner = Runner(settings)
    runner.prepare()
    found = {"_load_seconds": round(time.monotonic() - started, 1)}
    with Store(settings.database_path) as store:
        for clip in clips(speech):
            started = time.monotonic()
            recording, job = import_audio(store, settings, speech / clip["file"])
            job = _run_here(store, runner, job, clip["file"])
            entry = {"ok": job.status == "done", "recording": recording.id,
                     "seconds": round(time.monotonic() - started, 1)}
            if job.status == "done":
                recording = store.get_recording(recording.id)
                joiner = "" if recording.language in ("zh", "yue", "ja") else " "
                entry.update(text=joiner.join(s.text for s in store.segments(recording.id)),
                             language=recording.language, profile=recording.profile)
            else:
                entry["error"] = job.error
            found[clip["file"]] = entry
    out.write_text(json.dumps(found, ensure_ascii=False), encoding="utf-8")
    return 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def appliance(data_dir: Path) -> dict:
    """`python -m device run` on a loopback port: /health, then the library page signed in."""
    import httpx

    port = _free_port()
    env = {**os.environ, "TINGJI_DATA_DIR": str(data_dir), "TINGJI_PORT": str(port),
           "TINGJI_AUTO_SUMMARIZE": "0"}
    code, output, _ = _run([sys.executable, "-m", "device", "users", "add", "arm",
                            "--role", "admin"], env, stdin=PASSWORD + "\n")
    if code != 0:
        return {"ok": False, "error": output[-500:]}
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "device", "run"], cwd=ROOT, env=env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    result = {"ok": False}
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                health = httpx.get(base + "/health", timeout=10)
                break
            except httpx.HTTPError:
                time.sleep(1)
        else:
            return {"ok": False, "error": "no answer on /health in 600 s"}
        result["health"] = {"status": health.status_code, "body": health.json(),
                            "seconds_to_answer": round(time.monotonic() - started, 1)}
        with httpx.Client(base_url=base, timeout=60) as client:
            token = re.search(r'name="csrf_token" value="([^"]+)"',
                              client.get("/login").text).group(1)
            signed = client.post("/login", data={"username": "arm", "password": PASSWORD,
                                                 "csrf_token": token})
            library = client.get("/")
        result["library"] = {"status": library.status_code,
                             "signed_in": signed.status_code == 303,
                             "recordings_shown": library.text.count('<tr>') - 1}
        result["ok"] = (health.status_code == 200 and signed.status_code == 303
                        and library.status_code == 200 and 'table class="recordings"'
                        in library.text)
    finally:
        process.terminate()
        process.wait(60)
    return result


def inside(speech: Path, out: Path) -> int:
    from device.settings import Settings, hardware_profile

    report = {"machine": platform.machine(), "python": platform.python_version(),
              "emulated": True,
              "hardware_profile": hardware_profile(Settings.load()).as_dict()}
    code, output, seconds = _run(["make", "test-fast"], timeout=5400)
    summary_line = [line for line in output.splitlines() if " passed" in line or " failed"
                    in line][-1:] or [output[-300:]]
    report["test_fast"] = {"ok": code == 0, "seconds": seconds, "result": summary_line[0],
                           "failed": [line for line in output.splitlines()
                                      if line.startswith(("FAILED ", "ERROR "))]}
    with tempfile.TemporaryDirectory() as data:
        data_dir = Path(data)
        report["transcripts"] = transcribe_all(speech, data_dir)
        first = next((e for e in report["transcripts"].values()
                      if isinstance(e, dict) and e.get("ok") and e.get("language") == "zh"),
                     None)
        if first is not None:
            code, output, seconds = _run(
                [sys.executable, "-m", "device", "summarize", str(first["recording"])],
                {"TINGJI_DATA_DIR": str(data_dir), "TINGJI_SUMMARY_MODEL": SUMMARY_MODEL},
                timeout=3600)
            report["summary"] = {"ok": code == 0, "seconds": seconds, "model": SUMMARY_MODEL,
                                 "output": output[-2000:]}
        report["appliance"] = appliance(data_dir)
    out.write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    print(json.dumps({k: v.get("ok") if isinstance(v, dict) else v
                      for k, v in report.items()}, indent=2))
    return 0


def report(speech: Path, arm64: Path, out: Path) -> int:
    from bench.report import header, write

    emulated = json.loads(arm64.read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory() as data:
        here = transcribe_all(speech, Path(data))
    texts = []
    for name, entry in emulated.get("transcripts", {}).items():
        if name.startswith("_"):
            continue
        native = here.get(name, {})
        texts.append({"clip": name, "aarch64": entry.get("text"),
                      "x86_64": native.get("text"),
                      "same": entry.get("text") == native.get("text"),
                      "aarch64_seconds_emulated": entry.get("seconds"),
                      "x86_64_seconds": native.get("seconds")})
    qemu = subprocess.run(["qemu-aarch64-static", "--version"], capture_output=True,
                          text=True).stdout.splitlines()[:1]
    from device.settings import Settings

    result = {**header("arm64", Settings.load()),
              "emulated": "qemu-user-static on this machine: timings are not a speed claim",
              "qemu": qemu[0] if qemu else None,
              "aarch64": {k: v for k, v in emulated.items() if k != "transcripts"},
              "texts": texts,
              "all_texts_same": all(t["same"] for t in texts),
              "passed": bool(emulated.get("test_fast", {}).get("ok")
                             and all(t["aarch64"] for t in texts)
                             and emulated.get("summary", {}).get("ok")
                             and emulated.get("appliance", {}).get("ok"))}
    write(out, result)
    print(json.dumps({"passed": result["passed"], "all_texts_same": result["all_texts_same"],
                      "different": [t for t in texts if not t["same"]]},
                     ensure_ascii=False, indent=2))
    return 0 if result["passed"] else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("inside", "report", "transcribe"))
    parser.add_argument("--speech", type=Path, default=ROOT.parent / "shared" / "speech")
    parser.add_argument("--arm64", type=Path, help="the JSON `inside` wrote (report)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/arm64.json")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.mode == "transcribe":
        return transcribe_here(args.speech, args.out)
    if args.mode == "inside":
        return inside(args.speech, args.out)
    return report(args.speech, args.arm64, args.out)


if __name__ == "__main__":
    sys.exit(main())
