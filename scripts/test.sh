#!/usr/bin/env bash
# Runs the test suite. Installs the Debian packages the tests need when they are missing:
# Mesa's software Vulkan (lavapipe) for the wgpu tests, Xvfb and the X client libraries for
# the GUI test. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(mesa-vulkan-drivers libvulkan1 xvfb libxkbcommon-x11-0 libx11-xcb1 libxcursor1 libxrandr2 libxi6)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# the Vulkan loader wants a private runtime dir; lavapipe should not autotune for minutes
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
  export XDG_RUNTIME_DIR="$(mktemp -d)"
  chmod 700 "$XDG_RUNTIME_DIR"
fi
export CUBECL_AUTOTUNE_LEVEL="${CUBECL_AUTOTUNE_LEVEL:-minimal}"

# The research-licensed samples (and the real-size reference checkpoint) live in the project's
# shared/ folder, never in the repository: their tests (`shared::` in their names) run when it
# is there. CI always has it, so there its absence is an error.
shared=${DAPT_SHARED_DIR:-../shared}
skip=()
if [ ! -d "$shared/data" ] || [ ! -d "$shared/fixtures/reference" ]; then
  if [ -n "${CI:-}" ]; then
    echo "error: $shared/data or $shared/fixtures/reference is missing; CI runs every test" >&2
    exit 1
  fi
  echo "note: $shared/{data,fixtures/reference} not found: skipping the shared:: tests (research samples, real-size checkpoint); place the project's shared/ beside the clone or set DAPT_SHARED_DIR to run them"
  skip=(--skip shared::)
fi

if ((${#skip[@]})); then
  cargo test --locked "$@" -- "${skip[@]}"
else
  cargo test --locked "$@"
fi
