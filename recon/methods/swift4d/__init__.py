"""Swift4D (Wu et al., ICLR 2025): static/dynamic divide-and-conquer 4D Gaussian Splatting.

- :mod:`.config`: settings and the three-stage schedule (canonical 3DGS, dynamic score, spatio-temporal);
- :mod:`.masks`: pseudo ground truth for the dynamic score (temporal std for multi-view video; the residual of the
  static fit for monocular video);
- :mod:`.field`: the 4D hash-grid deformation field;
- :mod:`.model`: the method (stages, 2 views per step, the split, deformation of the dynamic Gaussians only,
  temporal-importance pruning, exports).
"""

from recon.methods.swift4d.config import Stages, Swift4DConfig  # noqa: F401
from recon.methods.swift4d.model import Swift4D  # noqa: F401  (registers "swift4d")
