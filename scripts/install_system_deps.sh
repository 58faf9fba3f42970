#!/usr/bin/env bash
# System packages mlx-caption uses on Debian/Ubuntu: OpenBLAS (fast MLX matmuls on the CPU),
# Java (pycocoevalcap's PTB tokenizer and METEOR) and Chromium (the web page's browser test).
#
#   install_system_deps.sh         best effort for `make demo`: skipped, with a note, where
#                                  apt-get is missing or we are not root and have no sudo.
#   install_system_deps.sh --test  also Java and Chromium, which the tests need: exits 1 when
#                                  it cannot provide them (CI would otherwise fail later, in
#                                  the tests that use them, or worse, skip them).
set -euo pipefail
CHROMIUM=/usr/bin/chromium # where tests/test_browser.py looks for it
testing=false
packages=(libopenblas0-pthread)
if [[ "${1:-}" == "--test" ]]; then
  testing=true
  packages+=(default-jre-headless chromium)
fi

# With --test, checks that Java and Chromium work (however they got here) and exits with the
# outcome; without it, exits 0.
finish() {
  if [[ "$testing" != true ]]; then exit 0; fi
  local missing=()
  # `java -version`, not `command -v java`: macOS has a /usr/bin/java stub without a JDK.
  java -version >/dev/null 2>&1 || missing+=("a working java (Debian: default-jre-headless)")
  [[ -x "$CHROMIUM" ]] || missing+=("$CHROMIUM (Debian: chromium)")
  if [[ ${#missing[@]} -gt 0 ]]; then
    printf 'install_system_deps: the tests need %s\n' "${missing[@]}" >&2
    echo "install_system_deps: install them, or run without --test (the demo does not need them)" >&2
    exit 1
  fi
  exit 0
}

if [[ "$(uname -s)" != "Linux" ]] || ! command -v apt-get >/dev/null; then
  echo "install_system_deps: not a Debian-like Linux, nothing to install"
  finish
fi
missing=()
for pkg in "${packages[@]}"; do
  # Java may come from elsewhere (a JDK on PATH); do not install a second one.
  if [[ "$pkg" == default-jre-headless ]] && java -version >/dev/null 2>&1; then continue; fi
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  finish
fi
sudo=""
if [[ "$(id -u)" != 0 ]]; then
  if command -v sudo >/dev/null; then sudo="sudo"; else
    echo "install_system_deps: please install: ${missing[*]}"
    finish
  fi
fi
echo "install_system_deps: installing ${missing[*]}"
if ! $sudo apt-get update -qq ||
  ! $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null; then
  echo "install_system_deps: apt-get could not install ${missing[*]}" >&2
  exit 1
fi
finish
