#!/usr/bin/env bash
# System packages mlx-caption uses on Debian/Ubuntu: OpenBLAS (fast MLX matmuls on the CPU),
# Java (pycocoevalcap's PTB tokenizer and METEOR) and Chromium (the web page's browser test).
# Skipped, with a note, where apt-get is missing or we are not root and have no sudo.
set -euo pipefail
packages=(libopenblas0-pthread)
if [[ "${1:-}" == "--test" ]]; then
  packages+=(default-jre-headless chromium)
fi
if [[ "$(uname -s)" != "Linux" ]] || ! command -v apt-get >/dev/null; then
  echo "install_system_deps: not a Debian-like Linux, nothing to install"
  exit 0
fi
missing=()
for pkg in "${packages[@]}"; do
  # Java may come from elsewhere (a JDK on PATH); do not install a second one.
  if [[ "$pkg" == default-jre-headless ]] && command -v java >/dev/null; then continue; fi
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi
sudo=""
if [[ "$(id -u)" != 0 ]]; then
  if command -v sudo >/dev/null; then sudo="sudo"; else
    echo "install_system_deps: please install: ${missing[*]}"; exit 0
  fi
fi
echo "install_system_deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
