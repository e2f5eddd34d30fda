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

from device.databases import open_store

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


EMULATED = {"TINGJI_BEAM_SIZE": "1", "TINGJI_DIARIZE": "0"}
"""Both sides decode each clip greedily, with its own dialect profile (the manifest's), and
label no speakers: under emulation, auto mode's trial decodes, a beam of 5 and the speaker
encoder made one short clip take 4-8 minutes.  The comparison is of the same code and
settings on two CPUs' kernels (the speech detector keeps onnxruntime in it)."""
LANES = 2
"""Transcribing processes at once: under qemu each uses one core."""


def transcribe_all(speech: Path, data_dir: Path, lanes: int = 1, first: str | None = None,
                   on_lane_done=lambda entries: None) -> dict[str, dict]:
    """Every clip transcribed as `python -m device transcribe` does (import, then the job
    run here), in ``lanes`` processes at once, each with its own data folder and a share of
    the clips (the longest first) — and the clip ``first``, if named, in a process of its
    own, so that what waits for it can start early; each entry says its ``data_dir``, and
    ``on_lane_done`` hears a process's entries as soon as it ends."""
    files = sorted((c["file"] for c in clips(speech) if c["file"] != first),
                   key=lambda name: -(speech / name).stat().st_size)
    shares = [files[lane::lanes] for lane in range(min(lanes, len(files)))]
    shares = ([[first]] if first else []) + shares
    running = []
    for lane, share in enumerate(shares):
        folder = data_dir / f"lane-{lane}"
        folder.mkdir(parents=True, exist_ok=True)
        log = open(folder / "lane.log", "w+", encoding="utf-8")
        running.append((folder, log, subprocess.Popen(
            [sys.executable, str(Path(__file__)), "transcribe", "--speech", str(speech),
             "--out", str(folder / "t.json"), "--only", ",".join(share)], cwd=ROOT,
            env={**os.environ, "TINGJI_DATA_DIR": str(folder), "TINGJI_AUTO_SUMMARIZE": "0",
                 **EMULATED}, stdout=log, stderr=subprocess.STDOUT)))
    found: dict[str, dict] = {}
    deadline = time.monotonic() + 7200
    while running and time.monotonic() < deadline:
        for folder, log, process in [r for r in running if r[2].poll() is not None]:
            running.remove((folder, log, process))
            log.seek(0)
            if process.returncode != 0:
                found[f"_{folder.name}_error"] = {"ok": False, "error": log.read()[-2000:]}
            else:
                entries = json.loads((folder / "t.json").read_text(encoding="utf-8"))
                for name, entry in entries.items():
                    if isinstance(entry, dict):
                        entry["data_dir"] = str(folder)
                    found[name if not name.startswith("_") else f"_{folder.name}{name}"] = entry
                on_lane_done(entries)
            log.close()
        time.sleep(1)
    for folder, _log, process in running:  # past the deadline
        process.kill()
        found[f"_{folder.name}_error"] = {"ok": False, "error": "did not finish in 2 hours"}
    return found


def transcribe_here(speech: Path, out: Path, only: set[str] | None = None) -> int:
    from device.cli.transcripts import _run_here
    from device.jobs import Runner
    from device.pipeline import import_audio
    from device.settings import Settings

    settings = Settings.load()
    started = time.monotonic()
    runner = Runner(settings)
    runner.prepare()
    found = {"_load_seconds": round(time.monotonic() - started, 1)}
    with open_store(settings) as store:
        for clip in clips(speech):
            if only is not None and clip["file"] not in only:
                continue
            started = time.monotonic()
            recording, job = import_audio(store, settings, speech / clip["file"],
                                          profile=clip.get("dialect") or None)
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
    # make test-fast, the transcriptions and the summary at once: under qemu each process
    # uses one core (the summary two), so the two cores stay busy
    started = time.monotonic()
    summary_clip = next((c["file"] for c in clips(speech) if c["language"] == "zh"), None)
    summary: dict = {}
    with tempfile.TemporaryDirectory() as data, \
            open(Path(data) / "test-fast.log", "w+", encoding="utf-8") as log, \
            open(Path(data) / "summary.log", "w+", encoding="utf-8") as summary_log:
        tests = subprocess.Popen(["make", "test-fast", "PYTEST_ARGS=--durations=25"], cwd=ROOT,
                                 stdout=log,
                                 stderr=subprocess.STDOUT)

        def summarise(entries: dict) -> None:
            entry = entries.get(summary_clip)
            if not (isinstance(entry, dict) and entry.get("ok")) or summary:
                return
            summary.update(started=time.monotonic(), process=subprocess.Popen(
                [sys.executable, "-m", "device", "summarize", str(entry["recording"])],
                cwd=ROOT, stdout=summary_log, stderr=subprocess.STDOUT,
                env={**os.environ, "TINGJI_DATA_DIR": entry["data_dir"],
                     "TINGJI_SUMMARY_MODEL": SUMMARY_MODEL}))

        report["transcripts"] = transcribe_all(speech, Path(data), lanes=LANES,
                                               first=summary_clip, on_lane_done=summarise)
        tests.wait(timeout=5400)
        log.seek(0)
        output = log.read()
        summary_line = [line for line in output.splitlines() if " passed" in line
                        or " failed" in line][-1:] or [output[-300:]]
        report["test_fast"] = {"ok": tests.returncode == 0,
                               "seconds": round(time.monotonic() - started, 1),
                               "result": summary_line[0],
                               "failed": [line for line in output.splitlines()
                                          if line.startswith(("FAILED ", "ERROR "))],
                               "slowest": re.findall(r"^\d+\.\d+s (?:call|setup|teardown) .*$",
                                                     output, re.MULTILINE)}
        if summary:
            code = summary["process"].wait(timeout=3600)
            summary_log.seek(0)
            report["summary"] = {"ok": code == 0, "model": SUMMARY_MODEL,
                                 "clip": summary_clip,
                                 "seconds": round(time.monotonic() - summary["started"], 1),
                                 "output": summary_log.read()[-2000:]}
        data_dir = Path(data) / "lane-1"
        report["appliance"] = appliance(data_dir)
    out.write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    print(json.dumps({k: v.get("ok", "…") if isinstance(v, dict) else v
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
    parser.add_argument("--only", help="transcribe: these clips (comma-separated) alone")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.mode == "transcribe":
        return transcribe_here(args.speech, args.out,
                               set(args.only.split(",")) if args.only else None)
    if args.mode == "inside":
        return inside(args.speech, args.out)
    return report(args.speech, args.arm64, args.out)


if __name__ == "__main__":
    sys.exit(main())
