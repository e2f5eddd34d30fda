"""What every benchmark writes: a JSON report that starts with the benchmark's name, the date
and the machine it ran on."""

from __future__ import annotations

import json
import time
from pathlib import Path

from device.settings import Settings, hardware_profile


def header(benchmark: str, settings: Settings) -> dict:
    return {"benchmark": benchmark, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": hardware_profile(settings).as_dict()}


def write(out: Path, report: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
