"""Per-Gaussian parameters: initialisation, per-parameter Adam, resizing for checkpoints, SH colour helpers.

Parameters live in an ``nn.ParameterDict`` with gsplat's names and pre-activation values, so gsplat's strategies
(which rewrite the dict and the Adam moments together) work unchanged:

- ``means`` [N, 3]; ``scales`` [N, 3] log; ``quats`` [N, 4] wxyz (unnormalised); ``opacities`` [N] logit;
- ``sh0`` [N, 1, 3] and ``shN`` [N, K-1, 3] spherical-harmonic coefficients (K = (degree+1)²);
- methods add their own per-Gaussian tensors (a dynamic score, normals, BRDF parameters) under other names.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from recon.render.sh import SH_C0


def rgb_to_sh(rgb: Tensor) -> Tensor:
    """DC SH coefficient that renders as ``rgb`` (gsplat/3DGS convention: colour = SH + 0.5)."""
    return (rgb - 0.5) / SH_C0


def sh_to_rgb(sh0: Tensor) -> Tensor:
    return sh0 * SH_C0 + 0.5


def knn_mean_distance(points: Tensor, k: int = 3) -> Tensor:
    """Root-mean-square distance from each point to its ``k`` nearest neighbours (simple-knn's job in 3DGS).

    A k-d tree (scipy) keeps this O(N log N): 100k points take well under a second on one core, where a dense
    distance matrix would take minutes.

    Args:
        points: [N, 3].

    Returns:
        [N] distances (on ``points``' device).
    """
    from scipy.spatial import cKDTree

    n = points.shape[0]
    if n <= 1:
        return torch.ones(n, device=points.device)
    k = min(k, n - 1)
    pts = points.detach().double().cpu().numpy()
    dist, _ = cKDTree(pts).query(pts, k=k + 1)  # the first neighbour is the point itself
    d = torch.from_numpy(np.sqrt((dist[:, 1:] ** 2).mean(1))).float()
    return d.to(points.device)


def init_splats(
    points: Tensor,
    colors: Tensor,
    sh_degree: int,
    init_opacity: float = 0.1,
    init_scale: float = 1.0,
    extra: dict[str, Tensor] | None = None,
) -> nn.ParameterDict:
    """Gaussians at ``points`` with isotropic scales from the 3-NN distance and colours as DC SH coefficients.

    Args:
        points: [N, 3] positions; colors: [N, 3] in [0, 1].
        sh_degree: maximum SH degree (coefficients for higher bands start at zero).
        extra: additional per-Gaussian tensors [N, ...] to make parameters of.
    """
    n = points.shape[0]
    dist = knn_mean_distance(points).clamp_min(1e-7)
    scales = torch.log(dist * init_scale)[:, None].repeat(1, 3)
    quats = torch.zeros(n, 4, device=points.device)
    quats[:, 0] = 1.0
    opacities = torch.logit(torch.full((n,), init_opacity, device=points.device))
    k = (sh_degree + 1) ** 2
    sh0 = rgb_to_sh(colors.clamp(0, 1))[:, None, :]
    shN = torch.zeros(n, k - 1, 3, device=points.device)
    params = {"means": points, "scales": scales, "quats": quats, "opacities": opacities, "sh0": sh0, "shN": shN}
    params.update(extra or {})
    return nn.ParameterDict({name: nn.Parameter(t.contiguous().float()) for name, t in params.items()})


def make_adam(splats: nn.ParameterDict, lrs: dict[str, float]) -> dict[str, torch.optim.Optimizer]:
    """One Adam per parameter (the layout gsplat's strategies expect), eps 1e-15 as in 3DGS."""
    return {name: torch.optim.Adam([{"params": [p], "lr": lrs[name], "name": name}], eps=1e-15) for name, p in splats.items()}


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def resize_like(splats: nn.ParameterDict, state_dict: dict[str, Tensor], prefix: str) -> None:
    """Replace parameters with empty ones of the checkpoint's shapes (the Gaussian count changes in training)."""
    for name in list(splats.keys()):
        key = prefix + name
        if key in state_dict and state_dict[key].shape != splats[name].shape:
            splats[name] = nn.Parameter(torch.empty_like(state_dict[key], device=splats[name].device))


def random_points(n: int, center: Tensor, half_extent: Tensor | float, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` uniform points in a box (centre [3], half-sizes [3] or a scalar) and random colours (the 3DGS
    initialisation for data without points)."""
    g = torch.Generator().manual_seed(seed)
    pts = (torch.rand(n, 3, generator=g) * 2 - 1) * torch.as_tensor(half_extent).cpu() + center.cpu()
    cols = torch.rand(n, 3, generator=g)
    return pts, cols


def scene_scale_of(cameras) -> float:
    """1.1 x the largest distance of a camera centre from their mean (3DGS's scene extent); 1 for one camera."""
    centers = cameras.centers()
    return float((centers - centers.mean(0)).norm(dim=1).max()) * 1.1 or 1.0


def initial_points(scene, init: str, num_random: int, random_box: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Initial centres [P, 3] and colours [P, 3]: the data's points (``init`` ``points``, or ``auto`` when it has
    some), else ``num_random`` random ones in ``random_box`` (centre [3], half-sizes [3])."""
    use_points = init == "points" or (init == "auto" and scene.points is not None and len(scene.points) > 0)
    if not use_points:
        return random_points(num_random, *random_box)
    if scene.points is None or len(scene.points) == 0:
        from recon.errors import ReconError

        raise ReconError("--model.init points needs a point cloud, and this data has none", scene.root)
    pts = torch.as_tensor(scene.points, dtype=torch.float32)
    cols = torch.as_tensor(scene.point_colors, dtype=torch.float32) if scene.point_colors is not None else torch.rand(len(pts), 3)
    return pts, cols


def focus_box(scene, extent: float) -> tuple[Tensor, Tensor]:
    """Centre [3] and half-sizes [3] of a cube around the point the training cameras look at, ``extent`` x their
    mean distance to it in half-size, clipped to the data's scene box when it has one."""
    from recon.cameras import camera_focus

    c2w = scene.cameras.camtoworlds[torch.from_numpy(scene.split("train"))]
    focus = torch.as_tensor(camera_focus(c2w), dtype=torch.float32)
    half = extent * float((c2w[:, :3, 3] - focus).norm(dim=1).mean())
    lo, hi = focus - half, focus + half
    if scene.aabb is not None:
        a_lo, a_hi = (torch.as_tensor(a, dtype=torch.float32) for a in scene.aabb)
        c_lo, c_hi = torch.maximum(lo, a_lo), torch.minimum(hi, a_hi)
        if (c_hi > c_lo).all():  # else the box and the cameras disagree: trust the cameras
            lo, hi = c_lo, c_hi
    return (lo + hi) / 2, (hi - lo) / 2


def visible_box(scene) -> tuple[Tensor, Tensor]:
    """Centre [3] and half-sizes [3] of a cube on the point the training cameras look at, half-size = mean camera
    distance to it x tan(half field of view): the extent the cameras see at that depth."""
    from recon.cameras import camera_focus

    cams = scene.cameras[torch.from_numpy(scene.split("train"))]
    c2w = cams.camtoworlds.double()
    center = torch.from_numpy(camera_focus(c2w))
    dist = (c2w[:, :3, 3] - center).norm(dim=-1).mean()
    Ks = cams.Ks().double()
    tan_half = torch.maximum(cams.widths.double() / (2 * Ks[:, 0, 0]), cams.heights.double() / (2 * Ks[:, 1, 1])).mean()
    return center.float(), torch.full((3,), float(dist * tan_half))
