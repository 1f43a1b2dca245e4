"""Package discovery for the product layout.

`recon/` is the Python package; `cuda/` (native kernels), `viewer/` (viser app) and `datasets/` (built-in demo
scenes) sit at the top level of the repository and install as `recon.kernels`, `recon.viewer` and `recon.demo`.
Everything else lives in pyproject.toml.
"""

from setuptools import find_packages, setup

MAPPED = {"recon": "recon", "recon.kernels": "cuda", "recon.viewer": "viewer", "recon.demo": "datasets"}

packages, package_dir = [], {}
for name, folder in MAPPED.items():
    package_dir[name] = folder
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir=package_dir)
