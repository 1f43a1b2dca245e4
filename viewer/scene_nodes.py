"""3D content the browser draws itself: training-camera frustums (click to jump), client-side Gaussian splats and
a method's mesh. Everything lives in the normalised scene frame, the frame the method renders in.
"""

from __future__ import annotations

import threading
from typing import Callable

import numpy as np

from .camera import from_camtoworld, vertical_fov
from .splats import viser_splats

THUMBNAIL_SIDE = 64  # pixels on the longer side: small, because every frustum's image is sent to every client


def camera_extent(scene) -> float:
    """Radius of the training cameras around their centroid (the scale for frustum sizes)."""
    centres = scene.cameras.centers().double().numpy()
    r = np.linalg.norm(centres - centres.mean(0), axis=1)
    ext = float(np.median(r)) if len(r) else 1.0
    return ext if ext > 1e-6 else 1.0


def thumbnail(image: np.ndarray, side: int = THUMBNAIL_SIDE) -> np.ndarray:
    """Strided downsample of an [H, W, 3] float image to at most ``side`` pixels, as uint8."""
    stride = max(1, int(np.ceil(max(image.shape[:2]) / side)))
    small = image[::stride, ::stride, :3]
    return (np.clip(small, 0, 1) * 255 + 0.5).astype(np.uint8)


class TrainingCameras:
    """Frustums of the training views. Clicking one calls ``on_click(client, index)``.

    Thumbnails are loaded on a background thread (reading hundreds of images must not delay the viewer); each
    frustum shows its image once it is loaded.
    """

    def __init__(self, server, scene, on_click: Callable[[object, int], None], root: str = "/training_cameras", max_cameras: int = 500):
        self.server = server
        self.scene = scene
        idx = np.asarray(scene.split("train"))
        if len(idx) > max_cameras:  # very large captures: an even subset keeps the browser responsive
            idx = idx[np.linspace(0, len(idx) - 1, max_cameras).round().astype(int)]
        self.indices = [int(i) for i in idx]
        self.handles: dict[int, object] = {}
        scale = 0.05 * camera_extent(scene)
        cams = scene.cameras
        for i in self.indices:
            wxyz, pos = from_camtoworld(cams.camtoworlds[i].numpy())
            h = server.scene.add_camera_frustum(
                f"{root}/{i:05d}",
                fov=vertical_fov(cams, i),
                aspect=float(cams.widths[i]) / float(cams.heights[i]),
                scale=scale,
                thickness=0.05 * scale,
                color=(255, 140, 30),
                wxyz=wxyz,
                position=pos,
            )
            h.on_click(lambda event, i=i: on_click(event.client, i))
            self.handles[i] = h
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._load_thumbnails, name="recon-thumbnails", daemon=True)
        self._thread.start()

    def _load_thumbnails(self) -> None:
        for i in self.indices:
            if self._stop.is_set():
                return
            try:
                self.handles[i].image = thumbnail(self.scene.image_rgb(i))
            except Exception:  # a missing or unreadable image only costs its thumbnail
                continue

    def set_visible(self, visible: bool) -> None:
        for h in self.handles.values():
            h.visible = visible

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)


class SplatNode:
    """Client-side rendering of a method's Gaussians (``method.gaussians(time)``), added and refreshed on demand."""

    def __init__(self, server, name: str = "/splats"):
        self.server = server
        self.name = name
        self.handle = None
        self.count = 0

    def show(self, method, time: float | None, lock) -> int:
        """(Re)send the Gaussians; returns how many were sent."""
        with lock:
            params = method.gaussians(time=time)
            arrays = viser_splats(params)
        self.hide()
        self.handle = self.server.scene.add_gaussian_splats(self.name, **arrays)
        self.count = len(arrays["centers"])
        return self.count

    def hide(self) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None


class MeshNode:
    """A method's mesh (``method.mesh()`` -> trimesh), extracted once on first show (it may take a while)."""

    def __init__(self, server, name: str = "/mesh"):
        self.server = server
        self.name = name
        self.handle = None
        self.mesh = None

    def show(self, method, lock) -> tuple[int, int]:
        if self.mesh is None:
            with lock:
                self.mesh = method.mesh()
        if self.handle is None:
            self.handle = self.server.scene.add_mesh_trimesh(self.name, self.mesh)
        self.handle.visible = True
        return len(self.mesh.vertices), len(self.mesh.faces)

    def hide(self) -> None:
        if self.handle is not None:
            self.handle.visible = False
