#!/usr/bin/env bash
# make arm64-check: the appliance on aarch64, under emulation, with the same code and the
# same wheels a board installs (docs/arm64.md).
#
# Once, cached in $ARM64_CACHE (default ~/.cache/tingji/arm64): a Debian 12 arm64 root file
# system made with debootstrap, run through qemu-user-static (binfmt_misc); llama-cpp-python
# cross-compiled for aarch64 with the Makefile's ARM flags (building it under emulation
# takes hours; its compiled part is a library loaded with ctypes, so a cross-built one is
# the same as a board's). Each run: the project copied in fresh, `make install` inside as on
# a board (aarch64 wheels from PyPI, the models from the manifest), then bench/arm64.py:
# make test-fast, every clip of ../shared/speech transcribed and compared with this
# machine's text, a summary with the 0.5B model, the appliance answering /health and a
# signed-in library page. The report: bench/results/arm64.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PROJECT=$PWD
CACHE=${ARM64_CACHE:-$HOME/.cache/tingji/arm64}
ROOTFS=$CACHE/rootfs
SUITE=bookworm   # Debian 12: Python 3.11, as Raspberry Pi OS and Armbian ship it
LLAMA_VERSION=$(sed -n 's/^LLAMA_VERSION := //p' Makefile)
# what `make install` picks on a Raspberry Pi 5 or an RK3588 board (Cortex-A76: dotprod, fp16)
LLAMA_ARM="-DGGML_NATIVE=OFF -DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod+fp16"
SPEECH=${SPEECH_DIR:-$PROJECT/../shared/speech}
started=$(date +%s)
say() { echo "arm64-check [$(( $(date +%s) - started )) s]: $*" >&2; }

[ "$(id -u)" -eq 0 ] || { echo "make arm64-check needs root (debootstrap, chroot)" >&2; exit 1; }
[ "$(uname -m)" = x86_64 ] || { echo "make arm64-check emulates aarch64 on an x86_64 machine" >&2; exit 1; }
bash scripts/ensure-deb.sh debootstrap qemu-user-static binfmt-support crossbuild-essential-arm64 cmake
# aarch64 programs run through qemu: binfmt_misc must be mounted and know them
[ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64

if [ ! -x "$ROOTFS/usr/bin/python3" ]; then
  say "making the Debian $SUITE arm64 root file system (once; ~15 minutes)"
  rm -rf "$ROOTFS.tmp"
  mkdir -p "$CACHE"
  debootstrap --arch=arm64 --variant=minbase \
    --include=python3,python3-venv,python3-pip,ca-certificates,make,libportaudio2,libgomp1 \
    "$SUITE" "$ROOTFS.tmp" > "$CACHE/debootstrap.log"
  mv "$ROOTFS.tmp" "$ROOTFS"
fi

WHEELS=$CACHE/wheels
if ! ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*linux_aarch64.whl >/dev/null 2>&1; then
  say "cross-compiling llama-cpp-python $LLAMA_VERSION for aarch64 (once; ~5 minutes)"
  rm -rf "$CACHE/llama-build" && mkdir -p "$CACHE/llama-build" "$WHEELS"
  CMAKE_ARGS="-DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64 \
    -DCMAKE_C_COMPILER=aarch64-linux-gnu-gcc -DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++ $LLAMA_ARM" \
    python3 -m pip wheel --quiet --no-deps --no-cache-dir --no-binary llama-cpp-python \
      -w "$CACHE/llama-build" "llama-cpp-python==$LLAMA_VERSION"
  built=$(ls "$CACHE"/llama-build/llama_cpp_python-*.whl)
  # the wheel holds no Python extension, only aarch64 libraries: it is tagged for the target
  python3 - "$built" "$WHEELS" <<'EOF'
import sys, zipfile, pathlib
source, target = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
name = source.name.rsplit("-", 1)[0] + "-linux_aarch64.whl"
with zipfile.ZipFile(source) as old, zipfile.ZipFile(target / name, "w", zipfile.ZIP_DEFLATED) as new:
    for item in old.infolist():
        data = old.read(item)
        if item.filename.endswith(".dist-info/WHEEL"):
            data = data.replace(b"linux_x86_64", b"linux_aarch64")
        new.writestr(item, data)
EOF
fi

say "copying the project in"
rm -rf "$ROOTFS/opt/tingji" "$ROOTFS/opt/shared"
mkdir -p "$ROOTFS/opt/tingji" "$ROOTFS/opt/shared/speech" "$ROOTFS/opt/wheels" "$CACHE/models"
git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$ROOTFS/opt/tingji"
cp -a "$SPEECH"/. "$ROOTFS/opt/shared/speech/"
cp "$WHEELS"/*.whl "$ROOTFS/opt/wheels/"
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
# the network's trust as this machine has it (a proxy's own CA included), for pip inside
cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/ca-certificates.crt"

mounts=()
cleanup() { for m in "${mounts[@]}"; do umount -l "$m" 2>/dev/null || true; done; }
trap cleanup EXIT
for fs in proc sys dev; do
  mount --bind "/$fs" "$ROOTFS/$fs" && mounts=("$ROOTFS/$fs" "${mounts[@]}")
done
# what every installed Debian system has and debootstrap's minbase leaves out: shared
# memory on tmpfs (where the unlocked box key lives) and the loopback names
mount -t tmpfs -o mode=1777 tmpfs "$ROOTFS/dev/shm" && mounts=("$ROOTFS/dev/shm" "${mounts[@]}")
[ -s "$ROOTFS/etc/hosts" ] || printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' \
  > "$ROOTFS/etc/hosts"
# Under qemu-user the kernel's /proc/cpuinfo is this x86_64 machine's, which ARM libraries
# cannot parse (onnxruntime's CPU probe crashes on it): the system sees the cpuinfo a
# Cortex-A76 board (Pi 5, RK3588's big cores) gives, with qemu's features (dotprod, fp16).
features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
for n in $(seq 0 $(( $(nproc) - 1 ))); do
  printf 'processor\t: %s\nBogoMIPS\t: 48.00\nFeatures\t: %s\nCPU implementer\t: 0x41\n' "$n" "$features"
  printf 'CPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: 0xd0b\nCPU revision\t: 1\n\n'
done > "$CACHE/cpuinfo"
mount --bind "$CACHE/cpuinfo" "$ROOTFS/proc/cpuinfo" && mounts=("$ROOTFS/proc/cpuinfo" "${mounts[@]}")
mkdir -p "$ROOTFS/opt/tingji/models/weights"
mount --bind "$CACHE/models" "$ROOTFS/opt/tingji/models/weights" \
  && mounts=("$ROOTFS/opt/tingji/models/weights" "${mounts[@]}")

BUNDLE=/etc/ssl/certs/ca-certificates.crt
# qemu emulates the CPU that cpuinfo describes, a Cortex-A76: libraries that choose their
# kernels by the CPU's features (getauxval) take a Pi 5's, not qemu's `max` CPU's (SVE,
# i8mm), which a board has not and qemu runs slower
inside() { chroot "$ROOTFS" /usr/bin/env -i HOME=/root PATH=/usr/local/bin:/usr/bin:/bin \
  QEMU_CPU=cortex-a76 LANG=C.UTF-8 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_CERT=$BUNDLE SSL_CERT_FILE=$BUNDLE \
  REQUESTS_CA_BUNDLE=$BUNDLE bash -c "cd /opt/tingji && $*"; }
say "make install inside, as on a board (venv kept across runs)"
inside "{ [ -x /opt/venv/bin/python ] || python3 -m venv /opt/venv; } && ln -sfn /opt/venv .venv \
  && make deps catalogues WHEELHOUSE=/opt/wheels PYTHON=python3"
inside ".venv/bin/python -m models install whisper-base ge2e-speaker-encoder qwen2.5-coder-0.5b-instruct"
say "the checks (make test-fast, transcripts, a summary, the appliance)"
inside ".venv/bin/python bench/arm64.py inside --speech /opt/shared/speech --out /opt/arm64.json" \
  | tee "$CACHE/inside.log"
say "comparing with this machine"
.venv/bin/python bench/arm64.py report --speech "$SPEECH" --arm64 "$ROOTFS/opt/arm64.json"
say "done"
