"""Built-in PBR demo scene: shapes, determinism, consistency of the exposed ground truth, caching."""

from __future__ import annotations

import numpy as np
import torch

from recon.demo.pbr_scene import make_pbr_scene


def test_pbr_scene_small(tmp_path):
    s = make_pbr_scene(n_views=4, resolution=48, n_relit=2, supersample=1, subdivisions=3, cache_dir=tmp_path)
    H = W = 48
    assert s["images"].shape == (4, H, W, 4) and s["relit_images"].shape == (2, H, W, 4)
    assert s["viewmats"].shape == (4, 4, 4) and s["Ks"].shape == (4, 3, 3)
    a = s["alpha"]
    assert 0.1 < a.mean() < 0.9  # objects in view, background present
    assert np.allclose(s["images"][..., 3], a)
    fg = a > 0.99
    assert s["roughness"][fg].min() >= 0.08 and s["metallic"][fg].max() <= 1.0
    assert s["metallic"][fg].max() > 0.8 and s["metallic"][fg].min() < 0.05  # metals and dielectrics
    assert np.allclose(np.linalg.norm(s["normal"][fg], axis=-1), 1.0, atol=1e-3)
    # depth agrees with the camera: a foreground pixel back-projected lies on the mesh (near some vertex)
    c, v, u = [x[0] for x in np.nonzero(fg)]
    K, T = s["Ks"][c], s["viewmats"][c]
    z = s["depth"][c, v, u]
    X = np.array([(u + 0.5 - K[0, 2]) / K[0, 0] * z, (v + 0.5 - K[1, 2]) / K[1, 1] * z, z])
    Pw = T[:3, :3].T @ (X - T[:3, 3])
    assert np.linalg.norm(s["verts"] - Pw, axis=1).min() < 0.1
    # the relit views differ from the same material under the first light (a different environment)
    assert not np.allclose(s["relit_images"][..., :3].mean(), s["images"][..., :3].mean(), atol=1e-3)
    # deterministic and cached: second call loads the npz and returns identical arrays
    s2 = make_pbr_scene(n_views=4, resolution=48, n_relit=2, supersample=1, subdivisions=3, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    for k in ("images", "depth", "albedo", "relit_images"):
        assert np.array_equal(s[k], s2[k])
    m = s2["material_fn"](torch.tensor(s["verts"][:10]))
    assert m["base_color"].shape == (10, 3)
