"""One Settings object, read once at start-up from defaults, a TOML file and TINGJI_* variables.

Precedence: environment variables > config file > defaults.  The config file is
``$TINGJI_CONFIG`` if set, else ``./tingji.toml`` when it exists.

    >>> s = Settings.load(environ={"TINGJI_PORT": "9000"})
    >>> s.port
    9000
"""

from __future__ import annotations

import dataclasses
import os
import platform
import tomllib
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIX = "TINGJI_"
# onnxruntime providers for NPUs/accelerators found on ARM boards and PCs, best first.
PREFERRED_PROVIDERS = (
    "RKNPUExecutionProvider",
    "QNNExecutionProvider",
    "ArmNNExecutionProvider",
    "ACLExecutionProvider",
    "OpenVINOExecutionProvider",
    "CPUExecutionProvider",
)


class SettingsError(ValueError):
    pass


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")
    """Recordings, the SQLite database and logs live here."""
    models_dir: Path = PROJECT_ROOT / "models" / "weights"
    """Installed model weights (git-ignored)."""
    host: str = "127.0.0.1"
    port: int = 8000
    """Served over HTTPS only when ``host`` is anything but 127.0.0.1, ::1 or localhost."""
    redirect_port: int = 0
    """Serving HTTPS: a port whose plain HTTP answers only with a redirect to HTTPS (e.g. 80);
    0 = none."""
    asr_model: str = "whisper-base"
    """Model id from models/manifest.toml used for speech recognition."""
    language: str = "auto"
    """Default language: 'auto' or a Whisper code such as zh, yue, en."""
    ui_language: str = "zh-CN"
    """The pages' language for users who chose none and whose browser asks for none the box
    has: zh-CN, zh-TW or en."""
    threads: int = 0
    """CPU threads for recognition (one single-threaded decoder each, decoding windows side
    by side); 0 = one per available core."""
    compute_type: str = "int8"
    """CTranslate2 compute type; int8 is the fast, accurate choice on CPU."""
    batch_size: int = 1
    """Whisper windows each decoder decodes together: 2 costs about half as much memory
    again and is hardly faster (docs/benchmarks.md)."""
    beam_size: int = 5
    """Whisper's beam in batch transcription.  1 = greedy, faster; a
    window greedy decoding fails on (a repetition loop, unlikely text) is decoded again with
    a beam of 5.  Accuracy varies by CPU and audio: better or worse than the beam of 5 in
    the measurements in docs/benchmarks.md."""
    max_upload_bytes: int = 2 * 1024**3
    """Larger files are refused before anything is copied."""
    disk_reserve_bytes: int = 1024**3
    """Free space that uploads and imports must leave on the data disk: it is kept for live
    recording (16 kHz mono: 115 MB an hour), which never waits for it."""
    pending_imports_per_user: int = 3
    """Transcriptions an interviewer may have waiting at once; more uploads are refused
    until one is done, so one person cannot fill the queue for everyone."""
    max_audio_seconds: float = 8 * 3600.0
    """Longer audio is refused: a recording may last 8 h, and the final batch pass holds
    the decoded audio in memory (8 h = 1.8 GB; lower this on 4 GB boards)."""
    diarize: bool = True
    """Label who spoke in every transcript (the speaker model, ge2e-speaker-encoder)."""
    min_speakers: int = 1
    max_speakers: int = 8
    """The range a recording's speakers are counted in when nobody said how many."""
    name_voices: bool = True
    """Name a speaker whose voice matches a remembered voiceprint, as "李明?" until a
    reviewer confirms it."""
    summary_model: str = "qwen2.5-coder-1.5b-instruct-q4_k_m"
    """Model id of the summariser (kind llm)."""
    summary_notes_model: str = ""
    """Model id that reads a long transcript into notes for the summariser; empty = the
    summariser itself.  With the 0.5B an hour is summarised ~1.6x faster, from weaker notes
    (see docs/benchmarks.md)."""
    summary_extract: bool = False
    """Before writing, the model picks the transcript lines that carry the content and
    writes its points from them (one short call more).  Off: on real transcripts it did
    not make the points better supported (docs/benchmarks.md)."""
    auto_summarize: bool = True
    """Queue a summary after every finished transcription."""
    notes_chunk_chars: int = 1500
    """While a recording is made, its final transcript is read into the summary's notes in
    chunks of this many characters of Chinese (English: three times as many; ~1,000
    tokens): after stop, the last chunk and the summary are left."""
    llm_context: int = 8192
    """Context window of the summariser, in tokens."""
    summary_chunk_chars: int = 4500
    """A longer transcript (in characters of Chinese; English: three times as many) is
    read in chunks of at most this size into notes before the summary is written from
    them (4,500: ~2,900 tokens, well within ``llm_context``)."""
    log_level: str = "INFO"
    time_zone: str = "Asia/Shanghai"
    """IANA time zone in which pages show times (the database keeps UTC)."""

    @property
    def database_path(self) -> Path:
        return self.data_dir / "tingji.db"

    @property
    def voiceprints_path(self) -> Path:
        """Remembered voices: a database of their own, never in exports or update backups."""
        return self.data_dir / "voiceprints.db"

    @property
    def audio_dir(self) -> Path:
        return self.data_dir / "audio"

    @classmethod
    def load(
        cls, environ: Mapping[str, str] | None = None, config_file: Path | None = None
    ) -> Settings:
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        if config_file is None and environ.get(ENV_PREFIX + "CONFIG"):
            config_file = Path(environ[ENV_PREFIX + "CONFIG"])
        elif config_file is None and Path("tingji.toml").is_file():
            config_file = Path("tingji.toml")
        if config_file is not None:
            try:
                values.update(tomllib.loads(config_file.read_text(encoding="utf-8")))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise SettingsError(f"config file {config_file}: {exc}") from exc
        for f in fields(cls):
            key = ENV_PREFIX + f.name.upper()
            if key in environ:
                values[f.name] = environ[key]
        return cls.from_mapping(values)

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> Settings:
        known = {f.name: f for f in fields(cls)}
        unknown = set(values) - set(known)
        if unknown:
            raise SettingsError(
                f"unknown setting(s) {', '.join(sorted(unknown))}; valid: {', '.join(known)}"
            )
        converted = {}
        for name, raw in values.items():
            kind = type(getattr(cls, name)) if not isinstance(getattr(cls, name), Path) else Path
            if kind is bool and isinstance(raw, str):
                if raw.strip().lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise SettingsError(f"setting {name}={raw!r} is not true or false")
                converted[name] = raw.strip().lower() in ("1", "true", "yes", "on")
                continue
            try:
                converted[name] = kind(raw)
            except (TypeError, ValueError) as exc:
                raise SettingsError(
                    f"setting {name}={raw!r} is not a valid {kind.__name__}"
                ) from exc
        if converted.get("beam_size", 1) < 1:
            raise SettingsError(f"setting beam_size={values['beam_size']!r}: at least 1")
        if "time_zone" in converted:
            try:
                zoneinfo.ZoneInfo(str(converted["time_zone"]))
            except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
                raise SettingsError(f"setting time_zone={converted['time_zone']!r} is not a "
                                    "time zone (e.g. Asia/Shanghai, Asia/Hong_Kong, UTC)"
                                    ) from exc
        if converted.get("ui_language", "zh-CN") not in ("zh-CN", "zh-TW", "en"):
            raise SettingsError(f"setting ui_language={converted['ui_language']!r}: one of "
                                "zh-CN, zh-TW, en")
        return cls(**converted)

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)


# The vector extensions that decide llama.cpp's and CTranslate2's speed on a CPU.
_SIMD = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "asimd", "asimddp",
         "asimdhp", "i8mm", "sve")
# ARM cores by the part number /proc/cpuinfo gives (ARM's own designs, implementer 0x41).
_ARM_CORES = {"0xd03": "Cortex-A53", "0xd05": "Cortex-A55", "0xd08": "Cortex-A72",
              "0xd0b": "Cortex-A76", "0xd0d": "Cortex-A77", "0xd41": "Cortex-A78",
              "0xd0c": "Neoverse-N1", "0xd40": "Neoverse-V1", "0xd49": "Neoverse-N2",
              "0xd4f": "Neoverse-V2"}


@dataclass(frozen=True)
class Cpu:
    """The CPU's model name and vector extensions: two "2-core x86_64" boxes differ ~2.5x in
    LLM prompt speed with and without AVX-512, and decode Whisper's int8 slightly apart.
    On x86 its family and model numbers too: a virtual machine's CPU may be named only
    "AMD EPYC", and two such hosts with the same extensions here were ~2x apart (family 26
    is AMD's Zen 5)."""

    model: str
    simd: tuple[str, ...] = ()
    generation: str = ""

    @classmethod
    def read(cls, cpuinfo: Path = Path("/proc/cpuinfo")) -> Cpu:
        """On ARM the kernel names no model: the cores are named by their part numbers
        (an RK3588: 4x Cortex-A76 + 4x Cortex-A55)."""
        name, flags, parts = platform.processor() or platform.machine(), set(), []
        numbers: dict[str, str] = {}
        try:
            for line in cpuinfo.read_text().splitlines():
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    name = value.strip()
                elif key.strip() in ("cpu family", "model"):
                    numbers.setdefault(key.strip(), value.strip())
                elif key.strip() in ("flags", "Features"):
                    flags = set(value.split())
                elif key.strip() == "CPU part":
                    parts.append(_ARM_CORES.get(value.strip(), f"ARM part {value.strip()}"))
        except OSError:
            pass
        if parts:
            name = " + ".join(f"{parts.count(p)}x {p}" for p in dict.fromkeys(parts))
        generation = (f"family {numbers['cpu family']}, model {numbers['model']}"
                      if len(numbers) == 2 else "")
        return cls(name, tuple(f for f in _SIMD if f in flags), generation)


def board_model(device_tree: Path = Path("/proc/device-tree/model")) -> str | None:
    """The board, as its device tree names it ("Raspberry Pi 5 Model B Rev 1.0", "Radxa
    ROCK 5B"); None on a PC."""
    try:
        return device_tree.read_bytes().rstrip(b"\0").decode(errors="replace") or None
    except OSError:
        return None


def fast_cores(cpu_dir: Path = Path("/sys/devices/system/cpu")) -> int | None:
    """How many cores share the highest clock: on a big.LITTLE board (an RK3588's four
    Cortex-A76 and four A55) the decoders run on the big ones, as llama.cpp advises; None
    when every core is alike or the kernel does not say."""
    clocks = []
    for path in cpu_dir.glob("cpu[0-9]*/cpufreq/cpuinfo_max_freq"):
        try:
            clocks.append(int(path.read_text().strip()))
        except (OSError, ValueError):
            continue
    if len(set(clocks)) < 2:
        return None
    return clocks.count(max(clocks))


@dataclass(frozen=True)
class HardwareProfile:
    """What this box can do, and the choices the pipeline makes from it."""

    machine: str
    cores: int
    memory_bytes: int
    cpu_threads: int
    compute_type: str
    onnx_providers: tuple[str, ...] = field(default=())
    """Available onnxruntime providers, the ones the VAD will use, best first."""
    cpu: Cpu = field(default_factory=lambda: Cpu(platform.machine()))
    board: str | None = None
    """The board's model (ARM boards' device tree); None on a PC."""

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def hardware_profile(settings: Settings) -> HardwareProfile:
    import onnxruntime
    import psutil

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = settings.threads or min(fast_cores() or cores or 1, cores or 1)
    available = set(onnxruntime.get_available_providers())
    providers = tuple(p for p in PREFERRED_PROVIDERS if p in available) or (
        "CPUExecutionProvider",
    )
    return HardwareProfile(
        machine=platform.machine(),
        cores=cores or 1,
        memory_bytes=psutil.virtual_memory().total,
        cpu_threads=threads,
        compute_type=settings.compute_type,
        onnx_providers=providers,
        cpu=Cpu.read(),
        board=board_model(),
    )
