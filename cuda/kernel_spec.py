"""What the CPU kernels are built from and how: the one description shared by the install-time build (setup.py)
and the run-time build (`recon.kernels.build`), so both produce the same binary from the same flags.

This module imports nothing heavy at module level: setup.py loads it by file path before the package exists, and
torch is imported only inside :func:`extension`.

Environment (read at build time):
    RECON_KERNEL_ARCH   ``portable`` (default): the baseline of the machine's architecture (x86-64-v2 on
                        x86-64: SSE4.2, any x86-64 CPU since about 2009; the compiler's default elsewhere), so a
                        built wheel or a shared cache runs on any CPU of that kind; ``native``: ``-march=native``
                        (fastest on the build machine only; its binaries are keyed by the CPU's model and flags).
"""

from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path

#: compiled into one extension module; the order is the link order.
SOURCES = ("raster_cpu.cpp", "project_cpu.cpp", "hashgrid_cpu.cpp", "raytrace_cpu.cpp")
#: headers the sources include (part of the source digest: a change rebuilds).
HEADERS = ("raytrace_common.h",)
#: the installed module (``recon.kernels._cpu``) and the run-time build's module name.
INSTALLED_NAME = "_cpu"
RUNTIME_NAME = "_cpu_jit"
#: written next to every built module: what it was built from and for (read before the module is imported).
INFO_SUFFIX = ".build.json"
ARCHES = ("portable", "native")


def source_dir() -> Path:
    return Path(__file__).resolve().parent


def source_paths(root: Path | None = None) -> list[Path]:
    root = source_dir() if root is None else root
    return [root / s for s in SOURCES]


def source_digest(root: Path | None = None) -> str:
    """sha256 over the kernel sources (names and bytes): changes whenever a source does."""
    h = hashlib.sha256()
    root_ = source_dir() if root is None else root
    for p in source_paths(root) + [root_ / name for name in HEADERS]:
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def arch() -> str:
    value = os.environ.get("RECON_KERNEL_ARCH", "portable").strip().lower() or "portable"
    if value not in ARCHES:
        raise ValueError(f"RECON_KERNEL_ARCH={value!r} is not one of {', '.join(ARCHES)}")
    return value


def ninja_dir() -> str | None:
    """Folder of the ``ninja`` binary installed with this Python's ``ninja`` package, if any: the one ninja
    recon's builds put first on PATH (another ninja version would invalidate a build folder's state)."""
    try:
        import ninja
    except ImportError:
        return None
    return str(ninja.BIN_DIR) if (Path(ninja.BIN_DIR) / "ninja").is_file() else None


def cpu_fingerprint() -> str:
    """Short hash of the CPU model and feature flags: a ``native`` binary must not run on another CPU."""
    text = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "flags", "Features", "CPU part")):
                    text += line
                if line.startswith(("flags", "Features")):
                    break
    except OSError:
        pass
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def compile_args(arch_name: str) -> list[str]:
    # -ffp-contract=off: forward and backward must round sigma/alpha identically (no FMA in one, not the other)
    # so that the backward re-derives exactly the forward's skip/stop decisions.
    # setuptools adds Python's own CFLAGS: -g0 drops their debug info (a slower build, a 25x larger module) and
    # -fno-wrapv their signed-overflow wrapping (CPython needs it, these loops do not, and it can block loop
    # optimisations), so the code is generated as by the earlier torch JIT build.
    args = ["-O3", "-fopenmp", "-ffp-contract=off", "-g0", "-fno-wrapv"]
    machine = platform.machine().lower()
    if arch_name == "native":
        args.append("-march=native" if machine in ("x86_64", "amd64") else "-mcpu=native")
    elif machine in ("x86_64", "amd64"):
        args.append("-march=x86-64-v2")
    return args


def link_args() -> list[str]:
    return ["-fopenmp"]


def compiler_identity() -> str:
    """The C++ compiler setuptools/torch will call (``$CXX`` or ``c++``): resolved path and version line."""
    import shutil
    import subprocess

    cxx = os.environ.get("CXX", "c++").split()[0]
    path = shutil.which(cxx)
    if path is None:
        return f"{cxx} (not found)"
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
        version = out.splitlines()[0].strip() if out else "?"
    except (OSError, subprocess.SubprocessError):
        version = "?"
    return f"{os.path.realpath(path)}: {version}"


def build_info(arch_name: str, compiler: str) -> dict:
    """Everything that decides whether a built module fits this process and these sources."""
    import sys

    import torch

    info = {
        "sources": source_digest(),
        "arch": arch_name,
        "machine": platform.machine(),
        "python": f"{sys.version_info[0]}.{sys.version_info[1]}",
        "torch": torch.__version__,
        "cxx11_abi": bool(torch.compiled_with_cxx11_abi()),
        "compiler": compiler,
        "flags": compile_args(arch_name),
    }
    if arch_name == "native":
        info["cpu"] = cpu_fingerprint()
    return info


def extension(name: str, sources_root: str | Path):
    """The setuptools ``CppExtension`` for module ``name`` (dotted) from the sources under ``sources_root``
    (relative paths are what setup.py passes)."""
    from torch.utils.cpp_extension import CppExtension

    a = arch()
    return CppExtension(
        name=name,
        sources=[str(Path(sources_root) / s) for s in SOURCES],
        extra_compile_args=compile_args(a),
        extra_link_args=link_args(),
    )


def module_checksum(module_file: Path) -> dict:
    """Size and sha256 of a built module file: checked before it is imported, because loading a truncated
    shared library can kill the process (SIGBUS) instead of raising."""
    h = hashlib.sha256()
    with open(module_file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return {"module_bytes": module_file.stat().st_size, "module_sha256": h.hexdigest()}


def info_path(module_file: Path) -> Path:
    """The build description next to a built module file (``_cpu.cpython-311-x86_64-linux-gnu.so`` ->
    ``_cpu.build.json``)."""
    return module_file.with_name(module_file.name.split(".")[0] + INFO_SUFFIX)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def build_ext_class(use_ninja: bool):
    """torch's ``BuildExtension`` that also writes :data:`INFO_SUFFIX` next to each module it builds."""
    import json

    from torch.utils.cpp_extension import BuildExtension

    class BuildKernels(BuildExtension):
        def build_extension(self, ext):
            super().build_extension(ext)
            built = Path(self.get_ext_fullpath(ext.name))
            info = build_info(arch(), compiler_identity())
            info.update(module=built.name, **module_checksum(built))
            _write_atomic(info_path(built), json.dumps(info, indent=1))

        def copy_extensions_to_source(self):
            # In-place and editable builds: the module is copied next to the sources; its description goes along.
            super().copy_extensions_to_source()
            build_py = self.get_finalized_command("build_py")
            for ext in self.extensions:
                inplace_file, regular_file = self._get_inplace_equivalent(build_py, ext)
                _write_atomic(info_path(Path(inplace_file)), info_path(Path(regular_file)).read_text())

    return BuildKernels.with_options(use_ninja=use_ninja)
