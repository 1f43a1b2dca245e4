"""Just-in-time build of the C++/OpenMP CPU kernels with `torch.utils.cpp_extension.load`.

The sources ship inside this package (`recon.kernels`); the build goes to `$RECON_CACHE/torch_extensions/<key>`
(default `~/.cache/recon`), keyed by Python, torch and CPU so that a cache shared between machines or torch
versions never loads a stale or foreign binary. torch's own source hashing rebuilds when a .cpp changes.

Environment:
    RECON_CACHE        cache root (default ~/.cache/recon).
    RECON_NATIVE=0     build without -march=native (portable binary, a little slower).
    RECON_VERBOSE_BUILD=1  show the compiler output.
    RECON_CPU_THREADS=n    threads for the CPU kernels (default: torch.get_num_threads()).
    OMP_WAIT_POLICY=PASSIVE  (OpenMP, read at process start) recommended on machines shared with other jobs:
                           spinning idle workers otherwise cost more than the extra cores give.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import sys
import threading
from pathlib import Path
from types import ModuleType

_LOCK = threading.Lock()
_MODULES: dict[str, ModuleType] = {}
_NAME = "recon_raster_cpu"
_SOURCES = ("raster_cpu.cpp", "project_cpu.cpp", "hashgrid_cpu.cpp")


class KernelBuildError(RuntimeError):
    """The C++ CPU kernels could not be compiled; the message names the compiler problem."""


def cache_dir() -> Path:
    return Path(os.environ.get("RECON_CACHE", Path.home() / ".cache" / "recon")).expanduser()


def _cpu_fingerprint() -> str:
    # -march=native binaries must not be shared between different CPUs.
    text = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "flags")):
                    text += line
                if line.startswith("flags"):
                    break
    except OSError:
        pass
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def _build_dir() -> Path:
    import torch

    native = os.environ.get("RECON_NATIVE", "1") != "0"
    key = f"py{sys.version_info[0]}{sys.version_info[1]}_torch{torch.__version__.split('+')[0]}"
    key += f"_{_cpu_fingerprint()}" if native else "_portable"
    return cache_dir() / "torch_extensions" / key


def _flags() -> list[str]:
    # -ffp-contract=off: forward and backward must round sigma/alpha identically (no FMA in one, not the other)
    # so that the backward re-derives exactly the forward's skip/stop decisions.
    flags = ["-O3", "-fopenmp", "-ffp-contract=off"]
    if os.environ.get("RECON_NATIVE", "1") != "0" and platform.machine() in ("x86_64", "AMD64"):
        flags.append("-march=native")
    return flags


def load_cpu_rasterizer() -> ModuleType:
    """Returns the compiled CPU rasterizer module, compiling it on first use (~40 s).

    Raises:
        KernelBuildError: no working C++ compiler / ninja, or the compilation failed (message has the cause).
    """
    mod = _MODULES.get(_NAME)
    if mod is not None:
        return mod
    with _LOCK:
        if _NAME in _MODULES:
            return _MODULES[_NAME]
        from torch.utils import cpp_extension

        src_dir = Path(__file__).resolve().parent
        sources = [str(src_dir / s) for s in _SOURCES]
        for s in sources:
            if not Path(s).is_file():
                raise KernelBuildError(f"recon: CPU rasterizer source missing: {s} (broken install?)")
        cxx = os.environ.get("CXX", "c++")
        if shutil.which(cxx) is None:
            raise KernelBuildError(
                f"recon: no C++ compiler found ('{cxx}' is not on PATH); install g++ (e.g. apt install g++) "
                "or set CXX, or use backend='torch' (slow pure-PyTorch rasterizer)"
            )
        if not cpp_extension.is_ninja_available():
            raise KernelBuildError("recon: the 'ninja' build tool is missing (pip install ninja), or use backend='torch'")

        build_dir = _build_dir()
        build_dir.mkdir(parents=True, exist_ok=True)
        built = build_dir / f"{_NAME}.so"
        newest_src = max(Path(s).stat().st_mtime for s in sources)
        if not built.exists() or built.stat().st_mtime < newest_src:
            print("recon: compiling the CPU rasterizer (first use, ~40 s)…", file=sys.stderr, flush=True)
        verbose = os.environ.get("RECON_VERBOSE_BUILD", "0") == "1"
        try:
            mod = cpp_extension.load(
                name=_NAME,
                sources=sources,
                extra_cflags=_flags(),
                extra_ldflags=["-fopenmp"],
                build_directory=str(build_dir),
                verbose=verbose,
            )
        except Exception as e:  # torch raises RuntimeError with the compiler output inside
            msg = str(e)
            lines = [ln for ln in msg.splitlines() if "error" in ln.lower()][:8]
            detail = "\n".join(lines) if lines else msg[-2000:]
            raise KernelBuildError(
                f"recon: compiling the CPU rasterizer with '{cxx}' failed (build dir {build_dir}).\n{detail}\n"
                "Fix the compiler problem above (RECON_VERBOSE_BUILD=1 shows the full log), "
                "or use backend='torch' (slow pure-PyTorch rasterizer)."
            ) from e
        _MODULES[_NAME] = mod
        return mod
