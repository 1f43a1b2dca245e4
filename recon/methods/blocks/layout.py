"""Scene alignment without hand-tuning: up, ground plane, object region and initial blocks from the data.

The Blocks World code needs a hand-chosen world similarity (S/R/T_world) per scene so that the objects sit in
[-1, 1]^3 above a y = -0.9 ground; custom data means overlaying a point cloud and guessing (the repository's most
asked question). Here every choice is derived, in the normalised frame the method trains in:

1. up = the mean up axis of the training cameras;
2. ground = the dominant roughly-horizontal plane of the data's points (RANSAC), which also refines up; without
   points (or without a plane in them), a plane normal to up just below the objects;
3. object points = the data's points above the ground, else a visual hull carved from the masks, else none;
4. the object region (centre, radius) = robust statistics of the object points, else the point the cameras look at
   with a radius of 0.3x their distance (the framing of an object-centric capture);
5. initial blocks = k-means clusters of the object points (centre, principal axes, a ball as wide as the largest
   spread, mean colour), else uniform in the object region as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from recon.cameras import camera_focus
from recon.data.scene import SceneData
from recon.errors import ReconError
from recon.geometry.ground import camera_up, fit_ground_plane, visual_hull_points


@dataclass
class BlockInit:
    """Initial blocks: centres [B, 3], rotations [B, 3, 3] (local -> world), semi-axes [B, 3], colours [B, 3]."""

    centers: np.ndarray
    rotations: np.ndarray
    scales: np.ndarray
    colors: np.ndarray


@dataclass
class SceneLayout:
    """What the method derives from the data before training (all in the normalised frame).

    Attributes:
        up: [3] unit up; ground_point, ground_normal: [3] the ground plane (normal = up).
        center: [3] and radius: the object region; env_radius: radius of the environment (ground extent and background
            sphere), enclosing every camera.
        points: [P, 3] object points used for the initialisation (may be empty), colors: [P, 3] or None.
        notes: how each piece was found, for the log.
    """

    up: np.ndarray
    ground_point: np.ndarray
    ground_normal: np.ndarray
    center: np.ndarray
    radius: float
    env_radius: float
    points: np.ndarray
    colors: np.ndarray | None
    notes: list[str] = field(default_factory=list)


def derive_layout(scene: SceneData, init: str = "auto", ground: str = "auto") -> SceneLayout:
    """The :class:`SceneLayout` of the (normalised) training scene; ``init`` and ``ground`` as in :class:`BlocksConfig`."""
    if init not in ("auto", "points", "hull", "random"):
        raise ReconError(f"--model.init must be auto, points, hull or random (got {init!r})")
    if ground not in ("auto", "points", "cameras", "none"):
        raise ReconError(f"--model.ground must be auto, points, cameras or none (got {ground!r})")
    train = scene.split("train")
    cams = scene.cameras[torch.from_numpy(train)]
    c2w = cams.camtoworlds.numpy().astype(np.float64)
    notes = []
    up = camera_up(c2w)
    focus = camera_focus(c2w)
    cam_dist = float(np.linalg.norm(c2w[:, :3, 3] - focus, axis=1).mean())
    has_points = scene.points is not None and len(scene.points) >= 10
    if init == "points" and not has_points:
        raise ReconError("--model.init points needs a point cloud, and this data has none", scene.root)
    if ground == "points" and not has_points:
        raise ReconError("--model.ground points needs a point cloud, and this data has none", scene.root)

    plane = None
    if has_points and ground in ("auto", "points"):
        plane = fit_ground_plane(scene.points, up)
        if plane is not None:
            tilt = float(np.degrees(np.arccos(np.clip(plane.normal @ up, -1, 1))))
            notes.append(f"ground: RANSAC plane through {plane.inliers.mean():.0%} of {len(scene.points)} points, {tilt:.1f} deg from the cameras' up")
            up = plane.normal
        elif ground == "points":
            raise ReconError("--model.ground points: no roughly horizontal plane holds 15 % of the points", scene.root)

    points, colors = np.zeros((0, 3), np.float32), None
    if has_points and init in ("auto", "points"):
        points = np.asarray(scene.points, np.float32)
        colors = None if scene.point_colors is None else np.asarray(scene.point_colors, np.float32)
        keep = np.ones(len(points), bool)
        if plane is not None:
            spread = np.percentile(points, 98, 0) - np.percentile(points, 2, 0)
            keep &= plane.height(points) > 0.02 * float(np.linalg.norm(spread))
        if keep.any():  # stray points far from the objects would stretch the region and pull blocks away
            dist = np.linalg.norm(points - np.median(points[keep], 0), axis=1)
            keep &= dist <= np.percentile(dist[keep], 98)
        points, colors = points[keep], None if colors is None else colors[keep]
        notes.append(f"objects: {len(points)} points above the ground")
    elif scene.masks is not None and init in ("auto", "hull"):
        lo, hi = _box(scene, focus, cam_dist)
        masks = [scene.mask(int(i)) for i in train]
        points = visual_hull_points(cams, masks, lo, hi, resolution=64)
        notes.append(f"objects: visual hull of {len(train)} masks, {len(points)} voxels")
    elif init == "hull":
        raise ReconError("--model.init hull needs masks, and this data has none", scene.root)
    if len(points) < 10:
        points, colors = np.zeros((0, 3), np.float32), None
        notes.append("objects: no points or masks; blocks start uniform around the cameras' focus")

    if len(points):
        center = np.median(points, 0).astype(np.float64)
        radius = float(np.percentile(np.linalg.norm(points - center, axis=1), 95))
    else:
        center, radius = focus, 0.3 * cam_dist
    if plane is None and ground != "none":
        lowest = float(np.min((points - center) @ up)) if len(points) else -radius
        ground_point = center + lowest * up
        notes.append("ground: normal to the cameras' up, just below the objects")
        ground_normal = up
    elif plane is not None:
        ground_point = center - ((center - plane.point) @ plane.normal) * plane.normal  # under the objects
        ground_normal = plane.normal
    else:
        ground_point, ground_normal = center - 10 * cam_dist * up, up  # "none": out of sight
    env_radius = 2.0 * float(np.linalg.norm(c2w[:, :3, 3] - center, axis=1).max())
    return SceneLayout(up, ground_point, ground_normal, center, radius, env_radius, points, colors, notes)


def _box(scene: SceneData, focus: np.ndarray, cam_dist: float) -> tuple[np.ndarray, np.ndarray]:
    """The box carved for the visual hull: around the cameras' focus, grown to hold the data's box. Not the data's
    box alone: DTU's (NeuS's unit sphere) cuts off part of the object in some scans."""
    lo, hi = focus - 0.6 * cam_dist, focus + 0.6 * cam_dist
    if scene.aabb is not None:
        lo, hi = np.minimum(lo, scene.aabb[0]), np.maximum(hi, scene.aabb[1])
    return lo, hi


def initial_blocks(layout: SceneLayout, num_blocks: int, init_scale: float, rng: np.random.Generator) -> BlockInit:
    """Initial blocks: k-means clusters of ``layout.points`` (principal axes, semi-axes ``init_scale`` x 2 x the
    largest standard deviation, mean colour), or uniform random centres in the object region with random rotations when there are none."""
    from sklearn.cluster import KMeans

    pts = layout.points
    if len(pts) >= num_blocks * 3:
        km = KMeans(n_clusters=num_blocks, n_init=4, random_state=int(rng.integers(1 << 31))).fit(pts)
        centers, rots, scales, colors = [], [], [], []
        floor = 0.05 * layout.radius
        for k in range(num_blocks):
            p = pts[km.labels_ == k]
            c = p.mean(0)
            _, s, vt = np.linalg.svd(p - c, full_matrices=False) if len(p) >= 3 else (None, np.zeros(3), np.eye(3))
            R = vt.T
            if np.linalg.det(R) < 0:
                R[:, 2] *= -1
            std = s / np.sqrt(max(len(p), 1))
            centers.append(c)
            rots.append(R)
            # a ball as wide as the cluster's largest spread (2 std: most of a uniform cluster's half-width), not its
            # own shape: clusters of surface points are thin patches, and patches of one object would start side by
            # side; balls overlap, so the overlap and parsimony terms merge them
            scales.append(np.full(3, max(init_scale * 2.0 * std.max(), floor)))
            colors.append(layout.colors[km.labels_ == k].mean(0) if layout.colors is not None else np.full(3, 0.5))
        return BlockInit(np.array(centers), np.array(rots), np.array(scales), np.array(colors))
    d = rng.normal(size=(num_blocks, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    centers = layout.center + d * layout.radius * rng.uniform(0, 1, (num_blocks, 1)) ** (1 / 3)
    q = rng.normal(size=(num_blocks, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    from recon.rotations import quat_to_rotmat

    rots = quat_to_rotmat(q)
    scales = np.full((num_blocks, 3), init_scale * 0.5 * layout.radius) * rng.uniform(0.5, 1.5, (num_blocks, 3))
    return BlockInit(centers, rots, scales, np.full((num_blocks, 3), 0.5))
