"""Settings: defaults, a TOML file, TINGJI_* variables, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from device.settings import Cpu, Settings, SettingsError, board_model, fast_cores, hardware_profile


def test_defaults_are_the_embedded_appliance():
    s = Settings.load(environ={})
    assert (s.host, s.port, s.asr_model) == ("127.0.0.1", 8000, "whisper-base")
    assert s.database_path == Path("data") / "tingji.db"


def test_environment_overrides_file_overrides_defaults(tmp_path):
    config = tmp_path / "tingji.toml"
    config.write_text('port = 9000\ndata_dir = "/srv/tingji"\nlanguage = "zh"\n')
    s = Settings.load(environ={"TINGJI_CONFIG": str(config), "TINGJI_PORT": "9100"})
    assert s.port == 9100 and s.data_dir == Path("/srv/tingji") and s.language == "zh"


def test_bad_settings_say_what_is_wrong(tmp_path):
    with pytest.raises(SettingsError, match="TINGJI_PORT|port"):
        Settings.load(environ={"TINGJI_PORT": "eighty"})
    with pytest.raises(SettingsError, match="beam_size='0': at least 1"):
        Settings.load(environ={"TINGJI_BEAM_SIZE": "0"})
    config = tmp_path / "bad.toml"
    config.write_text("colour = 'blue'\n")
    with pytest.raises(SettingsError, match="unknown setting.*colour"):
        Settings.load(environ={"TINGJI_CONFIG": str(config)})
    config.write_text("port = \n")
    with pytest.raises(SettingsError, match="bad.toml"):
        Settings.load(environ={"TINGJI_CONFIG": str(config)})


def test_hardware_profile_picks_threads_int8_and_a_cpu_provider():
    profile = hardware_profile(Settings.load(environ={}))
    assert profile.cpu_threads >= 1 and profile.compute_type == "int8"
    assert profile.onnx_providers[-1] == "CPUExecutionProvider"
    assert profile.machine in ("x86_64", "aarch64", "arm64", "AMD64")
    assert profile.cpu.model and set(profile.cpu.simd) <= {
        "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "asimd", "asimddp",
        "asimdhp", "i8mm", "sve"}


def test_the_cpu_is_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("".join(f"processor\t: {n}\ncpu family\t: 26\nmodel\t\t: 2\n"
                               "model name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma f16c\n\n"
                               for n in range(2)))
    assert Cpu.read(cpuinfo) == Cpu("AMD EPYC", ("avx2", "fma", "f16c"), "family 26, model 2")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd asimddp\n")
    assert Cpu.read(arm).simd == ("asimd", "asimddp")


def test_a_time_zone_must_exist():
    assert Settings.from_mapping({"time_zone": "Asia/Hong_Kong"}).time_zone == "Asia/Hong_Kong"
    with pytest.raises(SettingsError, match="time_zone='Mars/Olympus' is not a time zone"):
        Settings.from_mapping({"time_zone": "Mars/Olympus"})


def test_an_arm_board_is_named_and_its_big_cores_counted(tmp_path):
    """An RK3588's /proc/cpuinfo (four Cortex-A55 and four A76, no model name), its device
    tree's model and its cores' clocks, as the kernel gives them."""
    info = "".join(
        f"processor\t: {n}\nBogoMIPS\t: 48.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 "
        f"sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\n"
        f"CPU implementer\t: 0x41\nCPU part\t: {'0xd05' if n < 4 else '0xd0b'}\n\n"
        for n in range(8))
    (tmp_path / "cpuinfo").write_text(info)
    cpu = Cpu.read(tmp_path / "cpuinfo")
    assert cpu.model == "4x Cortex-A55 + 4x Cortex-A76"
    assert cpu.simd == ("asimd", "asimddp", "asimdhp")
    (tmp_path / "model").write_bytes(b"Radxa ROCK 5B\0")
    assert board_model(tmp_path / "model") == "Radxa ROCK 5B"
    assert board_model(tmp_path / "none") is None
    for n in range(8):
        clock = tmp_path / "cpu" / f"cpu{n}" / "cpufreq" / "cpuinfo_max_freq"
        clock.parent.mkdir(parents=True)
        clock.write_text("1800000\n" if n < 4 else "2400000\n")
    assert fast_cores(tmp_path / "cpu") == 4
    for n in range(4, 8):  # every core alike: no big ones to prefer
        (tmp_path / "cpu" / f"cpu{n}" / "cpufreq" / "cpuinfo_max_freq").write_text("1800000")
    assert fast_cores(tmp_path / "cpu") is None
