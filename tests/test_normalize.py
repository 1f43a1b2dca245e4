import numpy as np
import torch

from recon.cameras import Cameras, orbit_poses
from recon.data.normalize import SceneTransform
from recon.export.splats import splats_to_data_frame
from scipy.spatial.transform import Rotation


def test_transform_round_trips_points_and_poses():
    R = Rotation.from_euler("xyz", [10, -30, 70], degrees=True).as_matrix()
    tf = SceneTransform(R, np.array([0.3, -1.0, 2.0]), 0.25)
    p = np.random.default_rng(0).normal(size=(20, 3))
    assert np.allclose(tf.invert_points(tf.apply_points(p)), p)
    c2w = orbit_poses(4, 3.0)
    moved = tf.apply_camtoworlds(c2w)
    assert np.allclose(tf.invert_camtoworlds(moved), c2w)
    # Projections are invariant: a point and the cameras moved together project to the same pixels.
    a = Cameras.create(c2w, 50, 50, 32, 32, 64, 64).project(torch.tensor(p[:3], dtype=torch.float32))[0]
    b = Cameras.create(moved, 50, 50, 32, 32, 64, 64).project(torch.tensor(tf.apply_points(p[:3]), dtype=torch.float32))[0]
    assert torch.allclose(a, b, atol=1e-3)


def test_export_undoes_rotation_including_sh():
    from recon.render.sh import eval_sh  # the rasterizer's SH evaluation

    R = Rotation.from_euler("xyz", [20, 45, -60], degrees=True).as_matrix()
    tf = SceneTransform(R, np.array([0.1, 0.2, 0.3]), 2.0)
    g = torch.Generator().manual_seed(0)
    n = 7
    splats = {
        "means": torch.randn(n, 3, generator=g), "scales": torch.randn(n, 3, generator=g) * 0.1,
        "quats": torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1), "opacities": torch.randn(n, generator=g),
        "sh0": torch.randn(n, 1, 3, generator=g), "shN": torch.randn(n, 15, 3, generator=g),
    }
    out = splats_to_data_frame(splats, tf)
    assert torch.allclose(torch.as_tensor(tf.apply_points(out["means"].double())).float(), splats["means"], atol=1e-5)
    assert torch.allclose(out["scales"], splats["scales"] + np.log(0.5), atol=1e-6)
    # A colour seen from normalised direction d equals the exported colour seen from the data direction R^T d.
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    d_data = d @ torch.as_tensor(R, dtype=torch.float32)  # rows: (R^T d)^T
    c_norm = eval_sh(3, d, torch.cat([splats["sh0"], splats["shN"]], 1))
    c_data = eval_sh(3, d_data, torch.cat([out["sh0"], out["shN"]], 1))
    assert torch.allclose(c_norm, c_data, atol=1e-4)
    # Rotations: the exported covariance axes are the normalised ones rotated back.
    from scipy.spatial.transform import Rotation as Rot

    q_n = splats["quats"].numpy()[:, [1, 2, 3, 0]]
    q_d = out["quats"].numpy()[:, [1, 2, 3, 0]]
    assert np.allclose(R.T @ Rot.from_quat(q_n[0]).as_matrix(), Rot.from_quat(q_d[0]).as_matrix(), atol=1e-5)
