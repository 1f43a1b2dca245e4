"""Gaussian PLY / .splat export: standard attributes, data frame restored (incl. rotation and SH), render round trip."""

import numpy as np
import torch
from plyfile import PlyData
from scipy.spatial.transform import Rotation

from recon.data.normalize import SceneTransform, normalize_scene
from recon.export.splats import read_ply, splats_to_data_frame, write_ply, write_splat
from recon.methods import get_method
from tests.helpers import blob_scene


def _method(scene):
    cls = get_method("gs")
    m = cls(cls.config_cls(sh_degree=3), scene, 10, "cpu")
    m.setup(scene)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-trivial view-dependent colour and anisotropy
        m.splats["shN"].normal_(0, 0.3, generator=g)
        m.splats["scales"].add_(torch.randn(m.splats["scales"].shape, generator=g) * 0.3)
        m.splats["quats"].copy_(torch.randn(m.splats["quats"].shape, generator=g))
        m.splats["opacities"].fill_(0.5)
    return m


def test_ply_round_trip_renders_identically_in_the_data_frame(tmp_path):
    scene = blob_scene()
    tf = SceneTransform(Rotation.from_euler("xyz", [30, -20, 75], degrees=True).as_matrix(), np.array([0.2, -0.1, 0.3]), 0.4)
    scene_n = normalize_scene(scene, tf)
    m = _method(scene_n)
    path = write_ply(splats_to_data_frame(m.gaussians(), tf), tmp_path / "s.ply")

    ply = PlyData.read(str(path))["vertex"]
    names = list(ply.data.dtype.names)
    expected = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(45)]
    expected += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    assert names == expected and len(ply.data) == m.splats["means"].shape[0]
    assert all(ply.data.dtype[n] == np.dtype("<f4") for n in names)

    # Load the PLY into a method that lives in the data frame, render the data-frame cameras: same pixels.
    loaded = read_ply(path)
    m2 = _method(scene)
    m2.splats.update({k: torch.nn.Parameter(v) for k, v in loaded.items()})
    for i in range(0, len(scene), 5):
        a = m.render(scene_n.cameras[i], outputs=("rgb", "alpha"))
        b = m2.render(scene.cameras[i], outputs=("rgb", "alpha"))
        assert a["alpha"].mean() > 0.05
        assert torch.allclose(a["rgb"], b["rgb"], atol=2e-4), (a["rgb"] - b["rgb"]).abs().max()
        assert torch.allclose(a["alpha"], b["alpha"], atol=2e-4)


def test_f_rest_is_channel_major(tmp_path):
    n = 3
    splats = {
        "means": torch.zeros(n, 3), "scales": torch.zeros(n, 3), "quats": torch.tensor([[1.0, 0, 0, 0]] * n), "opacities": torch.zeros(n),
        "sh0": torch.zeros(n, 1, 3), "shN": torch.arange(n * 3 * 3, dtype=torch.float32).reshape(n, 3, 3),
    }
    ply = PlyData.read(str(write_ply(splats, tmp_path / "c.ply")))["vertex"]
    # f_rest_0..2 are the red channel of coefficients 1..3 of Gaussian 0.
    assert [float(ply["f_rest_%d" % i][0]) for i in range(3)] == splats["shN"][0, :, 0].tolist()
    assert torch.equal(read_ply(tmp_path / "c.ply")["shN"], splats["shN"])


def test_splat_file_layout(tmp_path):
    scene = blob_scene()
    m = _method(scene)
    path = write_splat(m.gaussians(), tmp_path / "s.splat")
    n = m.splats["means"].shape[0]
    raw = np.fromfile(path, dtype=[("pos", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])
    assert len(raw) == n and path.stat().st_size == 32 * n
    # Same set of positions (sorted by importance in the file).
    a = np.sort(raw["pos"].view(np.float32).reshape(-1, 3), axis=0)
    b = np.sort(m.splats["means"].detach().numpy(), axis=0)
    assert np.allclose(a, b)
    q = (raw["rot"].astype(np.float32) - 128) / 128
    assert np.allclose(np.linalg.norm(q, axis=1), 1.0, atol=0.03)


def test_exported_ply_loads_into_visers_gaussian_splat_node(tmp_path):
    import viser

    from recon.viewer.splats import viser_splats

    scene = blob_scene()
    m = _method(scene)
    path = write_ply(m.gaussians(), tmp_path / "s.ply")
    arrays = viser_splats(read_ply(path))
    n = len(arrays["centers"])
    assert n > 0 and arrays["covariances"].shape == (n, 3, 3) and arrays["rgbs"].shape == (n, 3)
    import socket

    with socket.socket() as sock:  # a free port on loopback
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = viser.ViserServer(host="127.0.0.1", port=port, verbose=False)
    try:
        handle = server.scene.add_gaussian_splats("/splats", **arrays)
        assert handle is not None
    finally:
        server.stop()
