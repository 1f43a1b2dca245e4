"""Run-time build of the CPU kernels, in a child process.

Run as a script by path (``python <kernels>/compile.py OUT_DIR``, which is what ``build.py`` does), so it
imports only ``kernel_spec`` from its own folder and works whatever made the package importable in the parent.
The same extension description and build command as the install-time build (``kernel_spec.extension`` with
torch's ``BuildExtension``), run with setuptools into a fresh temporary folder and moved into ``OUT_DIR`` when it
is complete, so a killed build never leaves a half-written module where a later process would load it. It runs in
a child process so that setuptools' global state stays out of the caller, and so that a parent interrupted by
Ctrl-C can stop it. ninja is the one that belongs to this Python (the ``ninja`` package's binary, put first on the
child's PATH), never whichever ninja happens to be first on the user's PATH; without it the sources compile one
after another.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import kernel_spec  # this file's folder is sys.path[0] when run as a script


def main(out_dir: str) -> int:
    from setuptools import setup

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    src = kernel_spec.source_dir()
    with tempfile.TemporaryDirectory(prefix="build-", dir=out) as tmp:
        lib, temp = Path(tmp) / "lib", Path(tmp) / "temp"
        os.chdir(src)  # relative sources: object files go under build_temp, never next to the sources
        setup(
            name="recon-kernels-runtime",
            ext_modules=[kernel_spec.extension(kernel_spec.RUNTIME_NAME, ".")],
            cmdclass={"build_ext": kernel_spec.build_ext_class(use_ninja=kernel_spec.ninja_dir() is not None)},
            script_args=["-q", "build_ext", "--build-lib", str(lib), "--build-temp", str(temp)],
        )
        built = sorted(lib.glob(kernel_spec.RUNTIME_NAME + ".*.so")) + sorted(lib.glob(kernel_spec.RUNTIME_NAME + ".so"))
        info = lib / (kernel_spec.RUNTIME_NAME + kernel_spec.INFO_SUFFIX)
        if not built or not info.is_file():
            print(f"recon: the build finished without producing {kernel_spec.RUNTIME_NAME}*.so", file=sys.stderr)
            return 1
        # Module first, its description last: a folder with the description always has the complete module.
        os.replace(built[0], out / (kernel_spec.RUNTIME_NAME + ".so"))
        os.replace(info, out / (kernel_spec.RUNTIME_NAME + kernel_spec.INFO_SUFFIX))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python compile.py OUT_DIR", file=sys.stderr)
        sys.exit(2)
    d = kernel_spec.ninja_dir()
    if d is not None:
        os.environ["PATH"] = d + os.pathsep + os.environ.get("PATH", "")
    sys.exit(main(sys.argv[1]))
