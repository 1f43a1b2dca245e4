"""Where is up, where is the ground, where are the objects: a scene's layout from its cameras, sparse points and masks.

Primitive fitting (Blocks World) and physics (dropping reconstructed objects onto the floor) both need a world frame
with a known up direction and a ground plane. The Blocks World code has the user pick them by hand for every new
scene (its most frequent question); here they are estimated:

- up: people hold cameras upright, so the mean of the cameras' up axes (-y in OpenCV) points up. A ground plane
  found in the points refines it.
- ground: RANSAC over planes whose normal is within ``max_tilt_deg`` of that up, keeping the plane with most inliers,
  refined by least squares on its inliers; accepted when it holds at least ``min_inlier_fraction`` of the points.
- objects: the points above the ground; without points, the voxels inside every silhouette (a visual hull) when
  the data has masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["camera_up", "GroundPlane", "fit_ground_plane", "visual_hull_points"]


def camera_up(camtoworlds: np.ndarray) -> np.ndarray:
    """[3] unit vector: the mean up axis (-y, OpenCV axes) of cameras [N, 4, 4]."""
    up = -np.asarray(camtoworlds, np.float64)[:, :3, 1].mean(0)
    n = np.linalg.norm(up)
    if n < 1e-6:  # cameras all around with no common up (e.g. a full sphere): fall back to +z
        return np.array([0.0, 0.0, 1.0])
    return up / n


@dataclass
class GroundPlane:
    """A plane ``{x : (x - point) . normal = 0}`` with ``normal`` pointing up (towards the cameras).

    Attributes:
        point: [3]; normal: [3] unit; inliers: [P] bool, the points on the plane (within the RANSAC threshold).
    """

    point: np.ndarray
    normal: np.ndarray
    inliers: np.ndarray

    def height(self, points: np.ndarray) -> np.ndarray:
        """[P] signed heights of points [P, 3] above the plane."""
        return (np.asarray(points, np.float64) - self.point) @ self.normal


def _plane_fit(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    centre = points.mean(0)
    _, _, vt = np.linalg.svd(points - centre, full_matrices=False)
    return centre, vt[-1]


def fit_ground_plane(
    points: np.ndarray, up: np.ndarray, threshold: float | None = None, max_tilt_deg: float = 30.0,
    min_inlier_fraction: float = 0.15, iterations: int = 500, seed: int = 0,
) -> GroundPlane | None:
    """The dominant roughly-horizontal plane of ``points`` [P, 3], or None when none holds enough of them.

    Args:
        up: [3] unit up direction the plane's normal must be close to (and is oriented along).
        threshold: inlier distance; default 1 % of the points' extent (robust spread: 2nd-98th percentile).
    """
    pts = np.asarray(points, np.float64)
    if len(pts) < 3:
        return None
    up = np.asarray(up, np.float64) / np.linalg.norm(up)
    lo, hi = np.percentile(pts, 2, axis=0), np.percentile(pts, 98, axis=0)
    if threshold is None:
        threshold = 0.01 * float(np.linalg.norm(hi - lo))
    rng = np.random.default_rng(seed)
    cos_tilt = np.cos(np.deg2rad(max_tilt_deg))
    best, best_count = None, 0
    for _ in range(iterations):
        a, b, c = pts[rng.choice(len(pts), 3, replace=False)]
        n = np.cross(b - a, c - a)
        norm = np.linalg.norm(n)
        if norm < 1e-12:
            continue
        n = n / norm
        if abs(n @ up) < cos_tilt:
            continue
        count = int((np.abs((pts - a) @ n) < threshold).sum())
        if count > best_count:
            best, best_count = (a, n), count
    if best is None or best_count < min_inlier_fraction * len(pts):
        return None
    a, n = best
    inliers = np.abs((pts - a) @ n) < threshold
    centre, normal = _plane_fit(pts[inliers])
    normal = normal if normal @ up > 0 else -normal
    inliers = np.abs((pts - centre) @ normal) < threshold
    return GroundPlane(centre, normal, inliers)


@torch.no_grad()
def visual_hull_points(cameras, masks, lo: np.ndarray, hi: np.ndarray, resolution: int = 64, min_views: int = 3) -> np.ndarray:
    """Centres [P, 3] of the voxels of the box [lo, hi] that fall inside the mask of every view that sees them.

    Args:
        cameras: :class:`recon.cameras.Cameras` (pinhole) of the views.
        masks: sequence of [H, W, 1] tensors/arrays in [0, 1], one per camera (foreground > 0.5).
        resolution: voxels along the longest side of the box.
        min_views: a voxel must be seen by at least this many views to count.
    """
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    step = float((hi - lo).max()) / resolution
    axes = [np.arange(lo[i] + step / 2, hi[i], step) for i in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    pts = torch.from_numpy(grid).float()
    inside = torch.ones(len(pts), dtype=torch.bool)
    seen = torch.zeros(len(pts), dtype=torch.int64)
    viewmats, Ks = cameras.viewmats().float(), cameras.Ks().float()
    for i in range(len(cameras)):
        m = torch.as_tensor(np.asarray(masks[i]), dtype=torch.float32)[..., 0] > 0.5
        H, W = m.shape
        cam = pts @ viewmats[i, :3, :3].T + viewmats[i, :3, 3]
        z = cam[:, 2]
        uv = cam @ Ks[i].T
        u = torch.floor(uv[:, 0] / z.clamp_min(1e-9)).long()
        v = torch.floor(uv[:, 1] / z.clamp_min(1e-9)).long()
        vis = (z > 1e-6) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
        seen += vis.long()
        fg = torch.zeros_like(vis)
        fg[vis] = m[v[vis], u[vis]]
        inside &= fg | ~vis
    return grid[(inside & (seen >= min_views)).numpy()].astype(np.float32)
