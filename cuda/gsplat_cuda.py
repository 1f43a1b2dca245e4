"""gsplat's CUDA kernels under the same discipline as recon's CPU kernels: built once, where recon says, announced,
and never blocked by a killed build.

gsplat 1.5.3 (without a prebuilt wheel) JIT-compiles its CUDA kernels with ``torch.utils.cpp_extension`` when its
CUDA backend is first imported, into torch's extensions folder, with whichever ninja is first on PATH; it deletes
torch's lock file at import, which avoids a stale lock but races with a build that is still running elsewhere.
:func:`ensure_built`, called before the first CUDA rasterization (and by ``python -m recon.kernels.gsplat_cuda``
at set-up on a CUDA machine), wraps that first import:

- the build folder is ``$RECON_CACHE/gsplat/<gsplat>-<torch>-<cuda>-py<ver>`` (through ``TORCH_EXTENSIONS_DIR``,
  the variable torch documents for this; a value the user set is kept), so another torch or CUDA gets its own;
- it holds recon's ``BuildLock`` (freed by the kernel when its holder dies) around the import, so two recon
  processes never build into one folder, and gsplat's lock clean-up never hits a live build;
- it puts this environment's ninja first on PATH while gsplat builds, and restores PATH after;
- it says when it compiles, and how long it took.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from pathlib import Path
from typing import Callable

from recon.kernels import kernel_spec
from recon.kernels.build import cache_dir
from recon.kernels.build_lock import announced_build

_DONE = False
_GUARD = threading.Lock()
_MODULE = "gsplat_cuda"  # gsplat's JIT extension name (its build folder and .so)


def build_root() -> Path:
    """``TORCH_EXTENSIONS_DIR`` for gsplat's build: the user's value, or recon's keyed folder."""
    if os.environ.get("TORCH_EXTENSIONS_DIR"):
        return Path(os.environ["TORCH_EXTENSIONS_DIR"])
    import torch

    try:
        from importlib.metadata import version

        gsplat_version = version("gsplat")
    except Exception:  # not installed as a distribution (e.g. a source checkout)
        gsplat_version = "unknown"
    cuda = (torch.version.cuda or "none").replace(".", "")
    tag = f"gsplat{gsplat_version}-torch{torch.__version__.split('+')[0]}-cu{cuda}-py{sys.version_info[0]}{sys.version_info[1]}"
    return cache_dir() / "gsplat" / tag


def _import_backend() -> None:
    try:
        importlib.import_module("gsplat.csrc")  # a prebuilt gsplat wheel: nothing to compile
        return
    except ImportError:
        pass
    importlib.import_module("gsplat.cuda._backend")


def ensure_built(import_backend: Callable[[], None] = _import_backend, say: Callable[[str], None] | None = None) -> None:
    """Import gsplat's CUDA backend once per process, compiling it (announced, locked) if needed.

    Args:
        import_backend: what triggers gsplat's build (tests pass a stand-in).
        say: where messages go (default: stderr).
    """
    global _DONE
    if _DONE:
        return
    say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
    with _GUARD:
        if _DONE:
            return
        root = build_root()
        root.mkdir(parents=True, exist_ok=True)
        os.environ["TORCH_EXTENSIONS_DIR"] = str(root)
        built = (root / _MODULE / f"{_MODULE}.so").is_file()
        with announced_build(root.with_name(root.name + ".lock"), "gsplat's CUDA kernels", built, root, kernel_spec.ninja_dir(), say, expected=", ~90 s"):
            import_backend()
        _DONE = True


if __name__ == "__main__":
    # Set-up on a CUDA machine: build gsplat's kernels now rather than in the first training run.
    import torch

    if not torch.cuda.is_available():
        print("recon: no CUDA device; gsplat's CUDA kernels are not needed here")
        sys.exit(0)
    ensure_built()
