"""Finding (and, only when needed, compiling) the C++/OpenMP CPU kernels.

The kernels are compiled when the package is installed (setup.py, into ``recon.kernels._cpu``), so running
recon needs no compiler, no ninja and no cache folder. ``RECON_KERNELS`` says where they come from:

    auto (default)  the installed build when it fits this process and these sources; otherwise (an install made
                    without torch in the build environment, a changed source, another torch, a damaged file) a
                    run-time build, announced with its reason on every compile.
    installed       only the installed build; anything else is a one-line error that says how to rebuild.
    runtime         always the run-time build (for developers editing the kernels: it follows the sources).

A run-time build goes to ``$RECON_CACHE/kernels/<key>/`` (default ``~/.cache/recon``). The key covers every
input that changes the binary: the sources' bytes, compile flags and target architecture (plus the CPU for a
``native`` build), the compiler's path and version, torch (version and C++ ABI), Python and the machine. So
nothing a user does to PATH, and no switch between checkouts or environments, makes one build overwrite another:
each set of inputs is built once and then found. The build runs in a child process (``compile.py``), is moved
into place only when complete, and is serialised by a ``flock`` lock that the kernel frees when its holder dies
(``build_lock.py``), so a killed build never blocks the next command.

Environment:
    RECON_KERNELS      auto | installed | runtime (above).
    RECON_KERNEL_ARCH  portable (default) | native: see ``kernel_spec``; read by both builds.
    RECON_CACHE        cache root for run-time builds (default ~/.cache/recon).
    RECON_CPU_THREADS=n    threads for the CPU kernels (default: torch.get_num_threads()).
    OMP_WAIT_POLICY=PASSIVE  (OpenMP, read at process start) recommended on machines shared with other jobs:
                           spinning idle workers otherwise cost more than the extra cores give.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

from recon.errors import ReconError
from recon.kernels import kernel_spec
from recon.kernels.build_lock import BuildLock

_LOCK = threading.Lock()
_MODULES: dict[str, ModuleType] = {}
_INFO: dict[str, dict] = {}
_KEY = "cpu"
MODES = ("auto", "installed", "runtime")
REBUILD_HINT = "reinstall to rebuild them (`pip install --no-build-isolation -e .` in a checkout, or scripts/setup.sh)"


class KernelBuildError(ReconError):
    """The CPU kernels are unusable and could not be (re)built; the message names the cause and the way out."""


def cache_dir() -> Path:
    return Path(os.environ.get("RECON_CACHE", Path.home() / ".cache" / "recon")).expanduser()


def kernel_mode() -> str:
    value = os.environ.get("RECON_KERNELS", "auto").strip().lower() or "auto"
    if value not in MODES:
        raise KernelBuildError(f"RECON_KERNELS={value!r} is not one of {', '.join(MODES)}")
    return value


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _import_file(path: Path, module_name: str) -> ModuleType:
    """Import the extension module file ``path`` whose init function is ``PyInit_<module_name>``."""
    spec = importlib.util.spec_from_file_location(f"recon.kernels.{module_name}", path)
    if spec is None:
        raise ImportError(f"not an extension module file: {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _read_info(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _damaged(path: Path, info: dict) -> str | None:
    """Why the module file does not match its build description (truncated, overwritten), or None. Checked
    before importing: dlopen of a truncated library can crash the process instead of raising."""
    try:
        size = path.stat().st_size
    except OSError as e:
        return f"cannot be read ({_first_line(e)})"
    if size != info.get("module_bytes"):
        return f"is damaged ({size} bytes, built as {info.get('module_bytes')})"
    if kernel_spec.module_checksum(path)["module_sha256"] != info.get("module_sha256"):
        return "is damaged (its checksum differs from the build's)"
    return None


def _mismatch(info: dict, arch: str) -> str | None:
    """Why a built module described by ``info`` does not fit this process and these sources, or None."""
    want = kernel_spec.build_info(arch, compiler="")
    for field, what in (("machine", "machine"), ("python", "Python"), ("torch", "torch"), ("cxx11_abi", "C++ ABI")):
        if info.get(field) != want[field]:
            return f"built for {what} {info.get(field)}, this is {want[field]}"
    if info.get("arch") == "native" and info.get("cpu") != kernel_spec.cpu_fingerprint():
        return "built with -march=native on another CPU"
    if info.get("sources") != want["sources"]:
        return "the kernel sources changed since they were built"
    if info.get("flags") != kernel_spec.compile_args(info.get("arch", "portable")):
        return "the kernels' compile flags changed since they were built"
    return None


# ---------------------------------------------------------------------------------------- installed build
def installed_path() -> Path | None:
    """The installed module's file (``recon.kernels._cpu``), or None when this install has none."""
    spec = importlib.util.find_spec(f"recon.kernels.{kernel_spec.INSTALLED_NAME}")
    return None if spec is None or spec.origin is None else Path(spec.origin)


def _load_installed(path: Path | None) -> tuple[ModuleType | None, str]:
    """(module, "") or (None, why the installed build at ``path`` is not used)."""
    if path is None:
        return None, "this install has no compiled kernels (it was built without torch in the build environment)"
    info = _read_info(kernel_spec.info_path(path))
    if info is None:
        return None, f"the installed kernels {path} have no readable build description"
    why = _mismatch(info, info.get("arch", "portable"))
    if why is not None:
        return None, f"the installed kernels {path} do not fit: {why}"
    damage = _damaged(path, info)
    if damage is not None:
        return None, f"the installed kernels {path} {damage}"
    try:
        module = _import_file(path, kernel_spec.INSTALLED_NAME)
    except (ImportError, OSError) as e:
        return None, f"the installed kernels {path} cannot be loaded ({_first_line(e)})"
    _INFO[_KEY] = {**info, "kind": "installed", "path": str(path)}
    return module, ""


# ---------------------------------------------------------------------------------------- run-time build
def runtime_build_dir(arch: str | None = None) -> Path:
    """Where the run-time build for the current inputs lives (see the module docstring for the key)."""
    arch = kernel_spec.arch() if arch is None else arch
    info = kernel_spec.build_info(arch, kernel_spec.compiler_identity())
    digest = hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()[:16]
    tag = f"{info['machine']}-py{info['python'].replace('.', '')}-torch{info['torch'].split('+')[0]}-{arch}"
    return cache_dir() / "kernels" / f"{tag}-{digest}"


def _compile_into(out: Path, reason: str) -> None:
    cxx = os.environ.get("CXX", "c++").split()[0]
    if shutil.which(cxx) is None:
        raise KernelBuildError(
            f"{reason}, and no C++ compiler is found to build them ('{cxx}' is not on PATH); {REBUILD_HINT}, "
            "install g++ (e.g. apt install g++) or set CXX, or use backend='torch' (slow pure-PyTorch rasterizer)"
        )
    _say(f"recon: compiling the CPU kernels ({reason}) into {out} (1-2 min)…")
    log = out.with_name(out.name + ".log")
    cmd = [sys.executable, str(kernel_spec.source_dir() / "compile.py"), str(out)]
    t0 = time.monotonic()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
        try:
            rc = proc.wait()
        finally:
            if proc.poll() is None:  # interrupted (Ctrl-C): do not leave a compiler running
                proc.kill()
                proc.wait()
    if rc != 0:
        text = log.read_text(errors="replace")
        lines = [ln for ln in text.splitlines() if "error" in ln.lower()][:8]
        detail = "\n".join(lines) if lines else text[-2000:]
        raise KernelBuildError(
            f"compiling the CPU kernels with '{cxx}' failed (log: {log}).\n{detail}\n"
            "Fix the compiler problem above, or use backend='torch' (slow pure-PyTorch rasterizer)."
        )
    _say(f"recon: compiled the CPU kernels in {time.monotonic() - t0:.0f} s")


def _load_runtime(reason: str) -> ModuleType:
    arch = kernel_spec.arch()
    out = runtime_build_dir(arch)
    so = out / (kernel_spec.RUNTIME_NAME + ".so")
    desc = out / (kernel_spec.RUNTIME_NAME + kernel_spec.INFO_SUFFIX)
    lock = BuildLock(out.with_name(out.name + ".lock"), purpose="compiling recon's CPU kernels")
    with lock:  # also while loading: a concurrent rebuild of a damaged build must not swap the file under us
        if desc.is_file():
            damage = _damaged(so, _read_info(desc) or {})
            try:
                if damage is not None:
                    raise ImportError(damage)
                module = _import_file(so, kernel_spec.RUNTIME_NAME)
            except (ImportError, OSError) as e:
                _say(f"recon: the run-time build {so} cannot be loaded ({_first_line(e)}); rebuilding it")
                desc.unlink(missing_ok=True)
                so.unlink(missing_ok=True)
            else:
                _INFO[_KEY] = {**(_read_info(desc) or {}), "kind": "runtime", "path": str(so)}
                return module
        _compile_into(out, reason)
        try:
            module = _import_file(so, kernel_spec.RUNTIME_NAME)
        except (ImportError, OSError) as e:
            raise KernelBuildError(f"{so}: the freshly compiled CPU kernels cannot be loaded ({_first_line(e)})") from e
    _INFO[_KEY] = {**(_read_info(desc) or {}), "kind": "runtime", "path": str(so)}
    return module


# ---------------------------------------------------------------------------------------- entry point
def load_cpu_rasterizer() -> ModuleType:
    """The compiled CPU kernels (rasterizer, projection, hash grid) as one module: the installed build, or a
    run-time build as ``RECON_KERNELS`` says (module docstring).

    Raises:
        KernelBuildError: the kernels are unusable and cannot be built (the message names why and what to do).
    """
    mod = _MODULES.get(_KEY)
    if mod is not None:
        return mod
    with _LOCK:
        if _KEY in _MODULES:
            return _MODULES[_KEY]
        mode = kernel_mode()
        reason = "RECON_KERNELS=runtime"
        if mode != "runtime":
            mod, reason = _load_installed(installed_path())
            if mod is None and mode == "installed":
                raise KernelBuildError(f"{reason}; {REBUILD_HINT}, or set RECON_KERNELS=auto to compile them at run time")
        if mod is None:
            mod = _load_runtime(reason)
        _MODULES[_KEY] = mod
        return mod


def kernel_info() -> dict:
    """How the loaded kernels were built (kind installed/runtime, path, arch, flags, compiler, torch ...);
    loads them first."""
    load_cpu_rasterizer()
    return dict(_INFO[_KEY])
