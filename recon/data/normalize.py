"""Scene normalisation: a similarity transform from the data's frame to the frame training works in.

Training centres and scales the scene so that hyperparameters (learning rates, densification thresholds) mean the
same thing on every data set. The transform is kept with the run (``config.yaml`` and checkpoints) so that every
export, render path and reported distance goes back to the input data's frame and units.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from recon.data.scene import SceneData


@dataclass
class SceneTransform:
    """x_normalised = scale * (R @ x_data) + translation.

    Attributes:
        rotation: [3, 3] rotation (identity unless an orientation method is chosen).
        translation: [3] translation applied after scaling.
        scale: isotropic scale factor.
    """

    rotation: np.ndarray
    translation: np.ndarray
    scale: float

    @staticmethod
    def identity() -> "SceneTransform":
        return SceneTransform(np.eye(3), np.zeros(3), 1.0)

    @property
    def matrix(self) -> np.ndarray:
        """[4, 4] homogeneous matrix data -> normalised."""
        m = np.eye(4)
        m[:3, :3] = self.scale * self.rotation
        m[:3, 3] = self.translation
        return m

    def to_dict(self) -> dict:
        return {"rotation": self.rotation.tolist(), "translation": self.translation.tolist(), "scale": float(self.scale)}

    @staticmethod
    def from_dict(d: dict) -> "SceneTransform":
        return SceneTransform(np.asarray(d["rotation"], dtype=np.float64), np.asarray(d["translation"], dtype=np.float64), float(d["scale"]))

    def apply_points(self, points):
        """[..., 3] data-frame points -> normalised frame (numpy or torch)."""
        R, t = self.rotation, self.translation
        if isinstance(points, torch.Tensor):
            R = torch.as_tensor(R, dtype=points.dtype, device=points.device)
            t = torch.as_tensor(t, dtype=points.dtype, device=points.device)
        return self.scale * points @ R.T + t

    def invert_points(self, points):
        """[..., 3] normalised-frame points -> data frame (numpy or torch)."""
        R, t = self.rotation, self.translation
        if isinstance(points, torch.Tensor):
            R = torch.as_tensor(R, dtype=points.dtype, device=points.device)
            t = torch.as_tensor(t, dtype=points.dtype, device=points.device)
        return ((points - t) / self.scale) @ R

    def apply_camtoworlds(self, c2w):
        """[N, 4, 4] data-frame camera-to-world -> normalised frame (rotations stay orthonormal)."""
        out = c2w.clone() if isinstance(c2w, torch.Tensor) else c2w.copy()
        R = self.rotation if not isinstance(c2w, torch.Tensor) else torch.as_tensor(self.rotation, dtype=c2w.dtype)
        out[..., :3, :3] = R @ c2w[..., :3, :3]
        out[..., :3, 3] = self.apply_points(c2w[..., :3, 3])
        return out

    def invert_camtoworlds(self, c2w):
        """[N, 4, 4] normalised-frame camera-to-world -> data frame."""
        out = c2w.clone() if isinstance(c2w, torch.Tensor) else c2w.copy()
        R = self.rotation if not isinstance(c2w, torch.Tensor) else torch.as_tensor(self.rotation, dtype=c2w.dtype)
        out[..., :3, :3] = R.T @ c2w[..., :3, :3]
        out[..., :3, 3] = self.invert_points(c2w[..., :3, 3])
        return out


def compute_normalization(scene: SceneData, method: str = "cameras") -> SceneTransform:
    """Choose the transform that puts the scene in a unit-sized frame.

    Args:
        method: ``cameras`` centres on the training cameras' mean and scales their farthest centre to distance 1
            (gsplat/3DGS style; good for captures around an object); ``aabb`` centres on the scene box and scales
            its half-diagonal to 1; ``none`` keeps the data frame.
    """
    if method == "none":
        return SceneTransform.identity()
    if method == "aabb" and scene.aabb is not None:
        lo, hi = np.asarray(scene.aabb, dtype=np.float64)
        center = (lo + hi) / 2
        radius = np.linalg.norm(hi - lo) / 2
    else:
        centers = scene.cameras.centers()[torch.from_numpy(scene.split("train"))].double().numpy()
        center = centers.mean(0)
        radius = np.linalg.norm(centers - center, axis=1).max()
        if radius < 1e-6:  # a single camera (or all at one spot): fall back to the point cloud or unit scale
            radius = float(np.linalg.norm(scene.points - center, axis=1).max()) if scene.points is not None and len(scene.points) else 1.0
    scale = 1.0 / max(radius, 1e-9)
    return SceneTransform(np.eye(3), -scale * center, scale)


def normalize_scene(scene: SceneData, transform: SceneTransform) -> SceneData:
    """Apply ``transform`` to cameras, points, bounds and box; images are untouched."""
    c2w = transform.apply_camtoworlds(scene.cameras.camtoworlds.double()).float()
    aabb = None
    if scene.aabb is not None:
        corners = np.array(np.meshgrid(*np.asarray(scene.aabb, dtype=np.float64).T)).reshape(3, -1).T
        moved = transform.apply_points(corners)
        aabb = np.stack([moved.min(0), moved.max(0)]).astype(np.float32)
    return replace(
        scene,
        cameras=scene.cameras.with_poses(c2w),
        points=None if scene.points is None else transform.apply_points(scene.points.astype(np.float64)).astype(np.float32),
        near_far=None if scene.near_far is None else (scene.near_far * transform.scale).astype(np.float32),
        aabb=aabb,
        _cache=scene._cache,
        _mask_cache=scene._mask_cache,
    )
