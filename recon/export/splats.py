"""Gaussian exports: the standard 3DGS PLY (INRIA layout) and antimatter15's ``.splat``, in the input data's frame.

PLY layout (what SuperSplat, GaussianSplats3D, viser and the INRIA viewers read): one binary little-endian
``vertex`` element with float properties ``x y z nx ny nz f_dc_0..2 f_rest_* opacity scale_0..2 rot_0..3``;
``f_rest`` is channel-major (all R coefficients, then G, then B), opacity a logit, scales natural logs, rotation
wxyz. ``.splat``: 32 bytes per Gaussian (position 3×f32, linear scale 3×f32, RGBA u8, quaternion 4×u8 as q·128+128),
sorted by decreasing size·opacity like antimatter15's converter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from recon.data.normalize import SceneTransform
from recon.errors import ReconError
from recon.render.sh import SH_C0, sh_rotation_matrix
from recon.rotations import quat_multiply, rotmat_to_quat


def splats_to_data_frame(splats: dict[str, Tensor], transform: SceneTransform) -> dict[str, Tensor]:
    """Undo the scene normalisation: means, log-scales, rotations and SH coefficients back in the data's frame.

    Args:
        splats: ``means`` [N,3], ``scales`` [N,3] (log), ``quats`` [N,4], ``opacities`` [N], ``sh0`` [N,1,3],
            ``shN`` [N,K-1,3].
    """
    out = {k: v.detach().float().cpu() for k, v in splats.items()}
    out["means"] = torch.as_tensor(transform.invert_points(out["means"].double())).float()
    out["scales"] = out["scales"] - float(np.log(transform.scale))
    if not np.allclose(transform.rotation, np.eye(3)):
        r_inv = transform.rotation.T  # normalised -> data rotation
        if "normals" in out:
            out["normals"] = out["normals"] @ torch.as_tensor(r_inv, dtype=torch.float32).T
        q = torch.as_tensor(rotmat_to_quat(r_inv), dtype=torch.float32)
        out["quats"] = quat_multiply(q.expand_as(out["quats"]), out["quats"])
        sh = torch.cat([out["sh0"], out["shN"]], 1)  # [N, K, 3]
        degree = int(round(np.sqrt(sh.shape[1]))) - 1
        M = sh_rotation_matrix(torch.as_tensor(r_inv), degree)
        sh = torch.einsum("kj,njc->nkc", M, sh)
        out["sh0"], out["shN"] = sh[:, :1], sh[:, 1:]
    return out


#: The Gaussian entries every 3DGS PLY has; a method's other per-Gaussian entries become extra properties.
STANDARD_KEYS = ("means", "scales", "quats", "opacities", "sh0", "shN")


def write_ply(splats: dict[str, Tensor], path: Path) -> Path:
    """Write Gaussians (pre-activation values, see module docstring) as a standard 3DGS PLY; non-finite rows are
    dropped. Returns the path. ``normals`` [N, 3], when given, fill the layout's ``nx ny nz`` (zeros otherwise);
    any other entry [N] or [N, C] (e.g. R3DG's ``base_color``, ``roughness``, ``metallic``) is appended as float
    properties ``<name>`` or ``<name>_0 .. <name>_{C-1}``, which standard 3DGS viewers ignore."""
    from plyfile import PlyData, PlyElement

    means = splats["means"].numpy()
    n = means.shape[0]
    sh0 = splats["sh0"].reshape(n, 3).numpy()
    shN = splats["shN"].transpose(1, 2).reshape(n, -1).numpy()  # [N, 3*(K-1)] channel-major
    normals = splats["normals"].reshape(n, 3).numpy() if "normals" in splats else np.zeros((n, 3), np.float32)
    cols = [means, normals, sh0, shN, splats["opacities"].reshape(n, 1).numpy(), splats["scales"].numpy(), splats["quats"].numpy()]
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(shN.shape[1])]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    for key in sorted(k for k in splats if k not in STANDARD_KEYS and k != "normals"):
        extra = splats[key].reshape(n, -1).numpy()
        cols.append(extra)
        names += [key] if extra.shape[1] == 1 else [f"{key}_{i}" for i in range(extra.shape[1])]
    data = np.concatenate(cols, 1).astype(np.float32)
    keep = np.isfinite(data).all(1)
    data = data[keep]
    arr = np.empty(len(data), dtype=[(nm, "<f4") for nm in names])
    for i, nm in enumerate(names):
        arr[nm] = data[:, i]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    PlyData([PlyElement.describe(arr, "vertex")], byte_order="<", comments=["exported by recon", "frame: input data"]).write(str(path))
    return path


def read_ply(path: Path) -> dict[str, Tensor]:
    """Read a 3DGS PLY back into pre-activation tensors (inverse of :func:`write_ply`)."""
    from plyfile import PlyData

    try:
        v = PlyData.read(str(path))["vertex"]
    except Exception as exc:
        raise ReconError(f"not a readable Gaussian PLY ({type(exc).__name__})", path) from None
    names = v.data.dtype.names
    needed = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    missing = [k for k in needed if k not in names]
    if missing:
        raise ReconError(f"Gaussian PLY lacks properties {missing}", path)
    col = lambda k: np.asarray(v[k], dtype=np.float32)  # noqa: E731
    n = len(v.data)
    rest = sorted([k for k in names if k.startswith("f_rest_")], key=lambda s: int(s.split("_")[-1]))
    shN = np.stack([col(k) for k in rest], 1).reshape(n, 3, -1).transpose(0, 2, 1) if rest else np.zeros((n, 0, 3), np.float32)
    return {
        "means": torch.from_numpy(np.stack([col("x"), col("y"), col("z")], 1)),
        "sh0": torch.from_numpy(np.stack([col("f_dc_0"), col("f_dc_1"), col("f_dc_2")], 1)[:, None, :]),
        "shN": torch.from_numpy(np.ascontiguousarray(shN)),
        "opacities": torch.from_numpy(col("opacity")),
        "scales": torch.from_numpy(np.stack([col(f"scale_{i}") for i in range(3)], 1)),
        "quats": torch.from_numpy(np.stack([col(f"rot_{i}") for i in range(4)], 1)),
    }


def write_splat(splats: dict[str, Tensor], path: Path) -> Path:
    """Write antimatter15's ``.splat`` (degree-0 colour only; a lossy viewing format)."""
    means = splats["means"].numpy().astype(np.float32)
    scales = np.exp(splats["scales"].numpy()).astype(np.float32)
    rgb = np.clip(splats["sh0"].reshape(-1, 3).numpy() * SH_C0 + 0.5, 0, 1)
    alpha = 1 / (1 + np.exp(-splats["opacities"].numpy()))
    q = splats["quats"].numpy()
    q = q / np.linalg.norm(q, axis=1, keepdims=True).clip(1e-12)
    order = np.argsort(-(scales.prod(1) * alpha))
    n = len(means)
    buf = np.zeros(n, dtype=[("pos", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])
    buf["pos"] = means[order]
    buf["scale"] = scales[order]
    buf["rgba"] = np.concatenate([rgb[order], alpha[order, None]], 1).__mul__(255).round().clip(0, 255).astype(np.uint8)
    buf["rot"] = (q[order] * 128 + 128).round().clip(0, 255).astype(np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf.tofile(path)
    return path
