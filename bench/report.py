"""What every benchmark writes: a JSON report that starts with the benchmark's name, the date
and the machine it ran on."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

from device.settings import Settings, hardware_profile

# The vector extensions that decide llama.cpp's and CTranslate2's speed on a CPU.
_SIMD = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "asimd", "asimddp",
         "i8mm")


def cpu() -> dict:
    """The CPU's model name and vector extensions (from /proc/cpuinfo): two "2-core x86_64"
    machines differ 2x in prompt speed with and without AVX-512."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() in ("flags", "Features"):
                flags = set(value.split())
    except OSError:
        pass
    return {"model": name, "simd": [f for f in _SIMD if f in flags]}


def header(benchmark: str, settings: Settings) -> dict:
    return {"benchmark": benchmark, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": {**hardware_profile(settings).as_dict(), "cpu": cpu()}}


def write(out: Path, report: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
