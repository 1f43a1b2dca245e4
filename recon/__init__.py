"""recon: 3D reconstruction and rendering from images."""

import os as _os

# OpenMP reads this once, when the runtime starts (on the first torch import). Passive waiting keeps idle worker
# threads from spinning between kernels: on small, shared CPUs spinning costs more than the extra core gives
# (measured in scripts/bench_raster.py). Users can still override it.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
