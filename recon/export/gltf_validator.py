"""Run the Khronos glTF validator (npm package ``gltf-validator``) on a file.

The validator is installed on first use under ``~/.cache/recon/node`` (override with ``RECON_NODE_CACHE``); it needs
``node`` and ``npm`` on PATH and network access for that first install. Used by tests and by ``recon export`` checks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from recon.errors import ReconError

_SCRIPT = r"""
const fs = require('fs');
const validator = require('gltf-validator');
const data = new Uint8Array(fs.readFileSync(process.argv[2]));
validator.validateBytes(data, {maxIssues: 100})
  .then((report) => { process.stdout.write(JSON.stringify(report)); })
  .catch((err) => { process.stderr.write(String(err)); process.exit(2); });
"""


def validator_dir() -> Path:
    return Path(os.environ.get("RECON_NODE_CACHE", Path.home() / ".cache" / "recon" / "node"))


def ensure_validator(timeout: float = 180.0) -> Path:
    """Install ``gltf-validator`` into the cache folder if needed; returns that folder.

    Raises:
        ReconError: node/npm missing or the install failed (e.g. offline).
    """
    root = validator_dir()
    if (root / "node_modules" / "gltf-validator").exists():
        return root
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise ReconError("the glTF validator needs node and npm on PATH")
    root.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(root), "gltf-validator"],
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not (root / "node_modules" / "gltf-validator").exists():
        raise ReconError(f"npm install gltf-validator failed: {proc.stderr.strip()[-300:]}", root)
    return root


def validate_gltf(path: str | Path, timeout: float = 120.0) -> dict:
    """Validate a ``.glb`` / ``.gltf`` file. Returns the validator's JSON report (``report["issues"]["numErrors"]``)."""
    path = Path(path).resolve()
    root = ensure_validator()
    script = root / "validate.js"
    if not script.exists() or script.read_text() != _SCRIPT:
        script.write_text(_SCRIPT)
    proc = subprocess.run(["node", str(script), str(path)], capture_output=True, text=True, timeout=timeout, cwd=root)
    if proc.returncode != 0:
        raise ReconError(f"glTF validator failed: {proc.stderr.strip()[-300:]}", path)
    return json.loads(proc.stdout)
