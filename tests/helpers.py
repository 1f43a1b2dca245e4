"""Small scenes the tests make themselves (no shared data needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from recon.cameras import Cameras, orbit_poses
from recon.data.scene import ArrayImages, SceneData, every_nth_split


def blob_scene(n_views: int = 12, size: int = 32, seed: int = 0, rgba: bool = False) -> SceneData:
    """A few coloured Gaussian blobs seen from an orbit, rendered analytically (no rasterizer involved)."""
    rng = np.random.default_rng(seed)
    c2w = orbit_poses(n_views, 3.0, 20.0)
    f = size * 1.2
    cams = Cameras.create(c2w, f, f, size / 2, size / 2, size, size)
    centers = rng.uniform(-0.5, 0.5, (5, 3))
    colors = rng.uniform(0.1, 0.9, (5, 3))
    imgs = []
    for i in range(n_views):
        o, d = cams.rays(i)
        o, d = o.double().numpy(), d.double().numpy()
        img = np.zeros((size, size, 3))
        acc = np.zeros((size, size, 1))
        for c, col in zip(centers, colors):
            t = ((c - o) * d).sum(-1, keepdims=True)
            dist2 = ((o + t * d - c) ** 2).sum(-1, keepdims=True)
            a = np.exp(-dist2 / (2 * 0.15**2)) * 0.9
            img += (1 - acc) * a * col
            acc += (1 - acc) * a
        if rgba:
            imgs.append(np.concatenate([img / np.maximum(acc, 1e-6), acc], -1).astype(np.float32))
        else:
            imgs.append((img + (1 - acc) * 1.0).astype(np.float32))
    pts = centers[rng.integers(0, 5, 400)] + rng.normal(0, 0.1, (400, 3))
    return SceneData(
        name="blobs",
        format="test:blobs",
        root=Path("."),
        cameras=cams,
        images=ArrayImages(np.stack(imgs)),
        splits=every_nth_split(n_views, 4),
        points=pts.astype(np.float32),
        point_colors=rng.uniform(0, 1, (400, 3)).astype(np.float32),
    )
