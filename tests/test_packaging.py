"""`pip install .` (not only editable) ships every part of the product layout: kernels (sources and the compiled
module with its build description), viewer, demo scenes."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_wheel_contains_the_mapped_packages_and_kernel_sources(tmp_path):
    pytest.importorskip("setuptools")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = next(tmp_path.glob("recon-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for required in ["recon/cli.py", "recon/kernels/raster_cpu.cpp", "recon/kernels/project_cpu.cpp", "recon/kernels/build.py",
                     "recon/kernels/kernel_spec.py", "recon/kernels/compile.py", "recon/kernels/_cpu.build.json",
                     "recon/viewer/app.py", "recon/demo/__init__.py", "recon/demo/static.py", "recon/methods/gs/model.py"]:
        assert required in names, required
    assert any(n.endswith("entry_points.txt") for n in names)
    # the wheel build compiled the CPU kernels (a platform wheel, not a pure-Python one)
    assert any(n.startswith("recon/kernels/_cpu.") and n.endswith(".so") for n in names), names
    assert "py3-none-any" not in wheel.name
    assert not any(n.startswith("tests/") for n in names)
