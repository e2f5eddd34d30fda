#!/usr/bin/env bash
# Install the named Debian packages that are missing (apt-get as root, or sudo without a
# password); otherwise say which are missing and carry on: the features (or tests) that
# need them say so themselves.
set -u
missing=()
for pkg in "$@"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then apt=(apt-get)
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then apt=(sudo apt-get)
else
  echo "tingji: missing Debian packages: ${missing[*]} (install them with apt-get as root)" >&2
  exit 0
fi
echo "tingji: installing Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${apt[@]}" update -qq </dev/null >/dev/null || echo "tingji: apt-get update failed" >&2
"${apt[@]}" install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null \
  || echo "tingji: could not install ${missing[*]}" >&2
exit 0
