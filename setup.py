"""Package discovery for the product layout, and the install-time build of the CPU kernels.

`recon/` is the Python package; `cuda/` (native kernels), `viewer/` (viser app) and `datasets/` (built-in demo
scenes) sit at the top level of the repository and install as `recon.kernels`, `recon.viewer` and `recon.demo`.
Everything else lives in pyproject.toml.

The C++/OpenMP CPU kernels compile here, into the extension module `recon.kernels._cpu`, with torch's
`BuildExtension` against the torch that is already installed. That needs torch importable while building, so
install with `pip install --no-build-isolation` after torch (scripts/setup.sh does). In an isolated build (no
torch) the package installs without the module and recon compiles the kernels on first use instead, saying so.
`RECON_KERNEL_ARCH=native` builds for this CPU only; `RECON_BUILD_KERNELS=0` skips the build.
"""

import importlib.util
import os
import sys
from pathlib import Path

from setuptools import find_packages, setup

MAPPED = {"recon": "recon", "recon.kernels": "cuda", "recon.viewer": "viewer", "recon.demo": "datasets"}

packages, package_dir = [], {}
for name, folder in MAPPED.items():
    package_dir[name] = folder
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(folder)]


def _kernel_spec():
    # Loaded by path: the package is not importable while it is being built.
    path = Path(__file__).resolve().parent / "cuda" / "kernel_spec.py"
    spec = importlib.util.spec_from_file_location("_recon_kernel_spec", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _kernel_build() -> dict:
    if os.environ.get("RECON_BUILD_KERNELS", "1") == "0":
        return {}
    try:
        import torch  # noqa: F401
        from torch.utils.cpp_extension import is_ninja_available
    except ImportError:
        print(
            "recon: torch is not importable in this build environment, so the CPU kernels are not compiled now; "
            "recon will compile them on first use. Install torch first, then "
            "`pip install --no-build-isolation .` to build them at install.",
            file=sys.stderr,
        )
        return {}
    spec = _kernel_spec()
    return {
        "ext_modules": [spec.extension(f"recon.kernels.{spec.INSTALLED_NAME}", "cuda")],
        "cmdclass": {"build_ext": spec.build_ext_class(use_ninja=is_ninja_available())},
    }


setup(packages=packages, package_dir=package_dir, **_kernel_build())
