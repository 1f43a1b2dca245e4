"""Rendering a multi-view video with fixed cameras, re-shading only the pixels that moving parts can affect.

With fixed cameras and lights, a pixel whose samples all hit static geometry and whose shadow rays no moving part
blocks has the colour of the static-only render, in every frame. So each camera's static image is rendered once, and
per frame only the *affected* pixels are rendered in full (:meth:`RayScene.render` with a pixel mask):

- a sample (or the pixel centre) whose first hit is a moving part, or
- a static-hit sample whose sun ray a moving part blocks (the static image's shadow rays, tested against the
  moving parts alone; a superset of the pixels whose shadow really changes, which the full render then decides).

Results are identical to rendering every frame in full (``tests/test_demo_scenes.py`` checks it), at a fraction
of the cost, since moving things cover a small share of the pixels.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import open3d as o3d

from recon.cameras import Cameras

from .gt_raycaster import Lighting, Part, RayScene, pinhole_rays, sample_pixels


def render_sequence(static: Sequence[Part], moving: Callable[[float], list[Part]], times: Sequence[float],
                    cameras: Cameras, lighting: Lighting, background, scale: float, ss: int = 2,
                    incremental: bool = True) -> dict[str, np.ndarray]:
    """Render every camera at every time.

    Args:
        static: parts that never move (``dynamic`` False).
        moving: time -> the moving parts at that time (``dynamic`` True).
        times: [T] times passed to ``moving``.
        cameras: the C fixed cameras.
        incremental: False renders every frame in full (the reference the fast path must match).

    Returns:
        each output of :meth:`RayScene.render` stacked to [C, T, ...].
    """
    C, T = len(cameras), len(times)
    static = list(static)
    frames: list[list[dict]] = [[None] * T for _ in range(C)]
    if not incremental:
        for t, time in enumerate(times):
            scene = RayScene(static + moving(float(time)), lighting, background, scale)
            for c in range(C):
                frames[c][t] = scene.render(cameras, c, ss)
        return _stack(frames)

    k = ss * ss
    base_scene = RayScene(static, lighting, background, scale)
    base, rays, shadow = [], [], []
    for c in range(C):
        h, w = int(cameras.heights[c]), int(cameras.widths[c])
        base.append(base_scene.render(cameras, c, ss))
        o, d = pinhole_rays(cameras, c, sample_pixels(h, w, ss).reshape(-1, 2))
        oc, dc = pinhole_rays(cameras, c, sample_pixels(h, w, 1)[:, 0])
        rays.append((o, d, oc, dc))
        shadow.append(base_scene.shadow_rays(o, d, ss) if lighting.shadows else (np.zeros((0, 6)), np.zeros(0, int)))

    for t, time in enumerate(times):
        parts = moving(float(time))
        scene = RayScene(static + parts, lighting, background, scale)
        blockers = o3d.t.geometry.RaycastingScene()
        for p in parts:
            if p.casts_shadow:
                blockers.add_triangles(o3d.core.Tensor(p.vertices.astype(np.float32)),
                                       o3d.core.Tensor(p.faces.astype(np.uint32)))
        for c in range(C):
            o, d, oc, dc = rays[c]
            n_static = len(static)
            affected = scene.first_hits(o, d) >= n_static  # moving parts come after the static ones
            srays, sidx = shadow[c]
            if len(srays):
                blocked = blockers.test_occlusions(o3d.core.Tensor(srays.astype(np.float32))).numpy().astype(bool)
                affected[sidx[blocked]] = True
            pix = affected.reshape(-1, k).any(1) | (scene.first_hits(oc, dc) >= n_static)
            out = {key: v.copy() for key, v in base[c].items()}
            if pix.any():
                h, w = out["alpha"].shape
                mask = pix.reshape(h, w)
                new = scene.render(cameras, c, ss, pixels=mask)
                for key in out:
                    out[key][mask] = new[key][mask]
            frames[c][t] = out
    return _stack(frames)


def _stack(frames: list[list[dict]]) -> dict[str, np.ndarray]:
    keys = frames[0][0].keys()
    return {key: np.stack([np.stack([f[key] for f in row]) for row in frames]) for key in keys}
