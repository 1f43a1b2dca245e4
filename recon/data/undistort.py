"""Undistortion of whole scenes for backends that render pinhole images (every rasterizer in recon).

Images are resampled lazily, on first use, through the inverse lens model (:meth:`Cameras.undistort_maps`); the
cameras keep their poses and focal lengths and lose their distortion. Sampling grids are cached per distinct
intrinsics, so a capture with one shared camera costs one grid.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from recon.cameras import Cameras
from recon.data.scene import ImageSource, SceneData


class _Undistorted:
    def __init__(self, source: ImageSource, cameras: Cameras):
        self.source, self.cameras = source, cameras
        self._grids: dict[tuple, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.source)

    def describe(self, index: int) -> str:
        return self.source.describe(index)

    def _grid(self, index: int) -> torch.Tensor:
        c = self.cameras
        key = (float(c.fx[index]), float(c.fy[index]), float(c.cx[index]), float(c.cy[index]), int(c.widths[index]),
               int(c.heights[index]), int(c.models[index]), tuple(c.distortion[index].tolist()))
        if key not in self._grids:
            self._grids[key] = c.undistort_maps(index)[0]
        return self._grids[key]

    def load(self, index: int) -> np.ndarray:
        img = torch.from_numpy(np.ascontiguousarray(self.source.load(index)))
        grid = self._grid(index)
        if img.shape[0] != grid.shape[0] or img.shape[1] != grid.shape[1]:
            return img.numpy()  # wrong size: let SceneData.image report it against the camera
        out = torch.nn.functional.grid_sample(img.permute(2, 0, 1)[None], grid[None], align_corners=False, padding_mode="border")
        return out[0].permute(1, 2, 0).contiguous().numpy()


def undistort_scene(scene: SceneData) -> SceneData:
    """The same scene seen through pinhole cameras (a no-op when it already is)."""
    if scene.cameras.is_pinhole:
        return scene
    cams = scene.cameras
    pinhole = replace(cams, models=torch.zeros_like(cams.models), distortion=torch.zeros_like(cams.distortion))
    return replace(
        scene,
        cameras=pinhole,
        images=_Undistorted(scene.images, cams),
        masks=None if scene.masks is None else _Undistorted(scene.masks, cams),
        # (resampled like the images; a normal's direction is kept as it is: the pinhole view's pixel looks along
        # almost the same ray)
        priors={k: _Undistorted(v, cams) for k, v in scene.priors.items()},
        _cache=None,
        _mask_cache=None,
    )
