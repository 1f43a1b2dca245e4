"""The CUDA twin of the Gaussian ray tracer (``raytrace_cuda.cu``), compiled on first use where CUDA is present.

Like gsplat's kernels (``gsplat_cuda.py``): built once into a folder keyed by the sources, torch, CUDA and Python
under ``$RECON_CACHE/raytrace_cuda/``, under recon's ``BuildLock`` (a killed build never blocks the next one), with
this environment's ninja first on PATH, and announced.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from pathlib import Path
from types import ModuleType

from recon.kernels import kernel_spec
from recon.kernels.build import cache_dir
from recon.kernels.build_lock import announced_build

_SOURCES = ("raytrace_cuda.cu", "raytrace_common.h")
_GUARD = threading.Lock()
_MODULE: ModuleType | None = None


def build_dir() -> Path:
    import torch

    h = hashlib.sha256()
    for name in _SOURCES:
        h.update((kernel_spec.source_dir() / name).read_bytes())
    cuda = (torch.version.cuda or "none").replace(".", "")
    tag = f"{h.hexdigest()[:12]}-torch{torch.__version__.split('+')[0]}-cu{cuda}-py{sys.version_info[0]}{sys.version_info[1]}"
    return cache_dir() / "raytrace_cuda" / tag


def load_cuda_tracer(say=None) -> ModuleType:
    """The compiled CUDA tracer module (``raytrace_trace_cuda``), built on first use (announced)."""
    global _MODULE
    if _MODULE is not None:
        return _MODULE
    say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
    with _GUARD:
        if _MODULE is not None:
            return _MODULE
        from torch.utils.cpp_extension import load

        folder = build_dir()
        folder.mkdir(parents=True, exist_ok=True)
        built = any(folder.glob("recon_raytrace_cuda*.so"))
        with announced_build(folder.with_name(folder.name + ".lock"), "recon's CUDA ray tracer", built, folder, kernel_spec.ninja_dir(), say):
            _MODULE = load(name="recon_raytrace_cuda", sources=[str(kernel_spec.source_dir() / "raytrace_cuda.cu")],
                           extra_include_paths=[str(kernel_spec.source_dir())], build_directory=str(folder),
                           extra_cuda_cflags=["-O3", "--fmad=false"], verbose=False)  # fmt: skip
        return _MODULE
