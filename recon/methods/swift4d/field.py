"""Swift4D's 4D deformation field: hash grid over (x, y, z, t) + trunk + five zero-initialised delta heads.

gaussian_methods.md §1.3: 16 levels x 4 features, base resolution 16, per-level scale 2, 2^15 rows per level; a
trunk (1 hidden layer of 128, 128-wide ReLU output) and heads with 2 hidden layers of 128 for Δxyz (3),
Δlog-scale (3), Δquaternion (4, added to the raw quaternion), Δopacity logit (1) and ΔSH (all K x 3 coefficients).
The heads' last layers start at zero, so the fine stage starts from the canonical reconstruction exactly.
"""

from __future__ import annotations

from torch import Tensor, nn

from recon.fields import DeformationHeads, HashGridEncoding

#: The 4D (x, y, z, t) hash grid (§1.3): 16 levels x 4 features, base resolution 16, per-level scale 2 on every axis
#: (time is a fourth hash coordinate; ``time_resolution`` caps its axis). The table size is the method's
#: ``log2_hashmap_size`` setting (reference 2^15; 2^16..2^20 for some scenes).
GRID = {"n_input_dims": 4, "n_levels": 16, "n_features_per_level": 4, "base_resolution": 16, "per_level_scale": 2.0}
#: Heads that move and shape a Gaussian: Δxyz, Δlog-scale, Δquaternion (added to the raw quaternion).
GEOMETRY_HEADS = {"xyz": 3, "scale": 3, "rotation": 4}


class DeformationField(nn.Module):
    """[M, 4] normalised (x, y, z, t) in [0, 1]^4 -> deltas {xyz [M,3], scale [M,3], rotation [M,4],
    opacity [M,1], sh [M, K*3]} (the last two only with ``appearance``).

    Args:
        sh_coeffs: K = (sh_degree + 1)^2.
        log2_hashmap_size: rows per hashed level (log2).
        time_resolution: cap on the time axis' resolution (None: the same geometric schedule as xyz).
        appearance: also the Δopacity and ΔSH heads (else geometry only: no ``opacity`` / ``sh`` outputs).
        time_base_resolution: cells along t at the coarsest level (None: the reference's 16, as for x, y, z); the
            time axis then doubles per level up to ``time_resolution``.
    """

    def __init__(self, sh_coeffs: int, log2_hashmap_size: int = 15, time_resolution: int | None = None, appearance: bool = True,
                 time_base_resolution: int | None = None):
        super().__init__()
        cap = None if time_resolution is None else (1e9, 1e9, 1e9, float(max(time_resolution, 1)))
        grid = dict(GRID)
        if time_base_resolution is not None:
            b = float(GRID["base_resolution"])
            grid["base_resolution"] = (b, b, b, float(max(time_base_resolution, 1)))
        self.encoding = HashGridEncoding(**grid, log2_hashmap_size=log2_hashmap_size, max_resolution=cap)
        heads = dict(GEOMETRY_HEADS)
        if appearance:
            heads.update({"opacity": 1, "sh": sh_coeffs * 3})
        self.heads = DeformationHeads(self.encoding.n_output_dims, heads=heads)

    def forward(self, xyzt: Tensor) -> dict[str, Tensor]:
        return self.heads(self.encoding(xyzt))
