"""Cameras: intrinsics (pinhole, OpenCV distortion, equidistant fisheye), poses, rays and conventions.

Conventions (see docs/architecture.md):

- camera axes follow OpenCV: x right, y down, z forward. Readers convert Blender/OpenGL poses (y up, z backward)
  with :func:`opengl_to_opencv` on load;
- ``camtoworlds`` are 4x4 float32 camera-to-world matrices, ``viewmats`` their inverses (world-to-camera);
- pixel centres are at (u + 0.5, v + 0.5): the top-left pixel covers [0, 1) x [0, 1);
- distortion parameters are stored as ``[k1, k2, k3, k4, p1, p2]`` for every camera. The OpenCV model uses
  k1, k2, k3, p1, p2 (k4 must be 0); the fisheye (equidistant, OpenCV ``fisheye``) model uses k1..k4.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from recon.errors import ReconError

CAMERA_MODELS = ("pinhole", "opencv", "fisheye")


def opengl_to_opencv(camtoworlds: Tensor | np.ndarray) -> Tensor | np.ndarray:
    """Convert camera-to-world matrices from OpenGL/Blender axes (y up, z back) to OpenCV axes (y down, z forward).

    Args:
        camtoworlds: [..., 4, 4] (or [..., 3, 4]) camera-to-world matrices.

    Returns:
        The same shape, with the camera's y and z axes negated.
    """
    out = camtoworlds.copy() if isinstance(camtoworlds, np.ndarray) else camtoworlds.clone()
    out[..., :3, 1:3] *= -1
    return out


opencv_to_opengl = opengl_to_opencv  # the flip is its own inverse


def check_poses(camtoworlds: np.ndarray, source: object, *, atol: float = 1e-3) -> None:
    """Raise a :class:`ReconError` naming ``source`` if a pose has NaN/inf values or a non-rigid rotation.

    Args:
        camtoworlds: [N, 4, 4] or [N, 3, 4] camera-to-world matrices.
        source: the file the poses came from (for the message).
        atol: tolerance on ``R @ R.T == I`` and ``det(R) == 1``.
    """
    c2w = np.asarray(camtoworlds, dtype=np.float64)
    bad = ~np.isfinite(c2w).reshape(len(c2w), -1).all(axis=1)
    if bad.any():
        raise ReconError(f"pose {int(np.argmax(bad))} contains NaN or inf values", source)
    rot = c2w[:, :3, :3]
    ortho = np.abs(rot @ rot.transpose(0, 2, 1) - np.eye(3)).reshape(len(c2w), -1).max(axis=1)
    det = np.linalg.det(rot)
    bad = (ortho > atol) | (np.abs(det - 1.0) > atol)
    if bad.any():
        i = int(np.argmax(bad))
        raise ReconError(
            f"pose {i} is not a rigid transform (|R R^T - I| = {ortho[i]:.3g}, det R = {det[i]:.4g})", source
        )


def _distort(xy: Tensor, params: Tensor, model: Tensor) -> Tensor:
    """Apply lens distortion to normalised image coordinates.

    Args:
        xy: [..., 2] undistorted normalised coordinates (x/z, y/z).
        params: [..., 6] distortion ``[k1, k2, k3, k4, p1, p2]``.
        model: [...] integer model code (index into :data:`CAMERA_MODELS`).

    Returns:
        [..., 2] distorted normalised coordinates.
    """
    x, y = xy[..., 0], xy[..., 1]
    k1, k2, k3, k4, p1, p2 = params.unbind(-1)
    r2 = x * x + y * y
    # OpenCV radial-tangential.
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xo = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yo = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    # Equidistant fisheye: the image radius is proportional to the angle from the axis.
    r = torch.sqrt(r2.clamp_min(1e-20))
    theta = torch.atan(r)
    t2 = theta * theta
    theta_d = theta * (1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))))
    fscale = torch.where(r2 > 1e-20, theta_d / r, torch.ones_like(r))
    xf, yf = x * fscale, y * fscale
    is_cv = model == 1
    is_fe = model == 2
    out_x = torch.where(is_cv, xo, torch.where(is_fe, xf, x))
    out_y = torch.where(is_cv, yo, torch.where(is_fe, yf, y))
    return torch.stack([out_x, out_y], -1)


def _undistort(xy_d: Tensor, params: Tensor, model: Tensor, iters: int = 20) -> Tensor:
    """Invert :func:`_distort` by Newton iterations (with a numerical Jacobian-free Gauss-Newton on 2x2 systems).

    Args:
        xy_d: [..., 2] distorted normalised coordinates.
        params, model: as in :func:`_distort`.

    Returns:
        [..., 2] undistorted normalised coordinates.
    """
    xy = xy_d.clone()
    eps = 1e-6
    for _ in range(iters):
        f = _distort(xy, params, model) - xy_d
        # 2x2 Jacobian by forward differences; cheap and robust for the smooth models used here.
        fx = (_distort(xy + torch.tensor([eps, 0.0], dtype=xy.dtype, device=xy.device), params, model) - xy_d - f) / eps
        fy = (_distort(xy + torch.tensor([0.0, eps], dtype=xy.dtype, device=xy.device), params, model) - xy_d - f) / eps
        a, b, c, d = fx[..., 0], fy[..., 0], fx[..., 1], fy[..., 1]
        det = a * d - b * c
        det = torch.where(det.abs() < 1e-12, torch.full_like(det, 1e-12), det)
        dx = (d * f[..., 0] - b * f[..., 1]) / det
        dy = (-c * f[..., 0] + a * f[..., 1]) / det
        xy = xy - torch.stack([dx, dy], -1)
        if float(f.abs().max()) < 1e-9:
            break
    return xy


@dataclass
class Cameras:
    """A batch of N cameras (one per image) with their poses, intrinsics, distortion and (optionally) times.

    Attributes:
        camtoworlds: [N, 4, 4] float32 camera-to-world, OpenCV axes.
        fx, fy, cx, cy: [N] float32 focal lengths and principal points in pixels.
        widths, heights: [N] int64 image sizes in pixels.
        models: [N] int64 index into :data:`CAMERA_MODELS` (0 pinhole, 1 opencv, 2 fisheye).
        distortion: [N, 6] float32 ``[k1, k2, k3, k4, p1, p2]`` (zeros for pinhole).
        times: [N] float32 in [0, 1] for dynamic scenes, else None.
    """

    camtoworlds: Tensor
    fx: Tensor
    fy: Tensor
    cx: Tensor
    cy: Tensor
    widths: Tensor
    heights: Tensor
    models: Tensor
    distortion: Tensor
    times: Tensor | None = None

    @staticmethod
    def create(
        camtoworlds: np.ndarray | Tensor,
        fx: Sequence[float] | float,
        fy: Sequence[float] | float,
        cx: Sequence[float] | float,
        cy: Sequence[float] | float,
        width: Sequence[int] | int,
        height: Sequence[int] | int,
        model: Sequence[str] | str = "pinhole",
        distortion: np.ndarray | Tensor | None = None,
        times: Sequence[float] | None = None,
    ) -> "Cameras":
        """Build cameras from per-camera or shared values (scalars are broadcast to all N cameras).

        Args:
            camtoworlds: [N, 4, 4] or [N, 3, 4] OpenCV camera-to-world matrices.
            fx, fy, cx, cy: pixels, scalar or [N].
            width, height: pixels, scalar or [N].
            model: a name from :data:`CAMERA_MODELS`, scalar or per camera.
            distortion: [6] or [N, 6] ``[k1, k2, k3, k4, p1, p2]``.
            times: [N] in [0, 1] or None.
        """
        c2w = torch.as_tensor(np.asarray(camtoworlds), dtype=torch.float32)
        if c2w.shape[-2] == 3:
            bottom = torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(*c2w.shape[:-2], 1, 4)
            c2w = torch.cat([c2w, bottom], -2)
        n = c2w.shape[0]

        def vec(v, dtype=torch.float32):
            t = torch.as_tensor(np.asarray(v, dtype=np.float64), dtype=dtype)
            return t.expand(n).clone() if t.ndim == 0 else t.reshape(n)

        names = [model] * n if isinstance(model, str) else list(model)
        for name in names:
            if name not in CAMERA_MODELS:
                raise ReconError(f"unsupported camera model {name!r} (supported: {', '.join(CAMERA_MODELS)})")
        models = torch.tensor([CAMERA_MODELS.index(m) for m in names], dtype=torch.int64)
        if distortion is None:
            dist = torch.zeros(n, 6)
        else:
            dist = torch.as_tensor(np.asarray(distortion), dtype=torch.float32)
            dist = dist.expand(n, 6).clone() if dist.ndim == 1 else dist.reshape(n, 6)
        return Cameras(
            camtoworlds=c2w,
            fx=vec(fx),
            fy=vec(fy),
            cx=vec(cx),
            cy=vec(cy),
            widths=vec(width, torch.int64),
            heights=vec(height, torch.int64),
            models=models,
            distortion=dist,
            times=None if times is None else vec(times),
        )

    # ------------------------------------------------------------------ containers
    def __len__(self) -> int:
        return self.camtoworlds.shape[0]

    def __getitem__(self, index) -> "Cameras":
        """Select cameras by int, slice, list or boolean/int tensor; always returns a batch."""
        if isinstance(index, int):
            index = [index]
        if isinstance(index, np.ndarray):
            index = torch.from_numpy(index)
        return Cameras(
            **{
                k: (None if v is None else v[index])
                for k, v in self.__dict__.items()
            }
        )

    def to(self, device: torch.device | str) -> "Cameras":
        return Cameras(**{k: (None if v is None else v.to(device)) for k, v in self.__dict__.items()})

    @property
    def device(self) -> torch.device:
        return self.camtoworlds.device

    @property
    def model_names(self) -> list[str]:
        return [CAMERA_MODELS[int(m)] for m in self.models]

    @property
    def is_pinhole(self) -> bool:
        """True when no camera has distortion (all pinhole, or distortion parameters all zero)."""
        plain = (self.models == 0) | ((self.models == 1) & (self.distortion.abs().sum(-1) == 0))
        return bool(plain.all())

    # ------------------------------------------------------------------ matrices
    def Ks(self) -> Tensor:
        """[N, 3, 3] pinhole intrinsic matrices."""
        K = torch.zeros(len(self), 3, 3, dtype=self.fx.dtype, device=self.device)
        K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = self.fx, self.fy, self.cx, self.cy, 1.0
        return K

    def viewmats(self) -> Tensor:
        """[N, 4, 4] world-to-camera matrices (rigid inverse of ``camtoworlds``)."""
        R = self.camtoworlds[:, :3, :3]
        t = self.camtoworlds[:, :3, 3:]
        out = torch.zeros_like(self.camtoworlds)
        out[:, :3, :3] = R.transpose(1, 2)
        out[:, :3, 3:] = -R.transpose(1, 2) @ t
        out[:, 3, 3] = 1.0
        return out

    def centers(self) -> Tensor:
        """[N, 3] camera centres in world coordinates."""
        return self.camtoworlds[:, :3, 3]

    def scaled(self, factor: float) -> "Cameras":
        """Cameras for images resized by ``factor`` (e.g. 0.5 for half resolution).

        Sizes are rounded like image downscaling (``floor(w * factor)`` for the images_N folders of COLMAP and LLFF);
        intrinsics follow the continuous convention in which pixel i covers [i, i+1).
        """
        w = torch.floor(self.widths.double() * factor + 1e-6).long()
        h = torch.floor(self.heights.double() * factor + 1e-6).long()
        sx = w.double() / self.widths.double()
        sy = h.double() / self.heights.double()
        return replace(
            self,
            fx=(self.fx.double() * sx).float(),
            fy=(self.fy.double() * sy).float(),
            cx=(self.cx.double() * sx).float(),
            cy=(self.cy.double() * sy).float(),
            widths=w,
            heights=h,
        )

    def with_poses(self, camtoworlds: Tensor) -> "Cameras":
        return replace(self, camtoworlds=camtoworlds.to(self.camtoworlds))

    # ------------------------------------------------------------------ projection and rays
    def project(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Project world points into every camera, with lens distortion.

        Args:
            points: [P, 3] world points.

        Returns:
            pixels [N, P, 2] (u, v) with pixel centres at +0.5, and depths [N, P] (camera z).
        """
        pts = points.to(self.camtoworlds)
        vm = self.viewmats()
        cam = torch.einsum("nij,pj->npi", vm[:, :3, :3], pts) + vm[:, None, :3, 3]
        z = cam[..., 2]
        xy = cam[..., :2] / z[..., None].clamp_min(1e-9)
        xy = _distort(xy, self.distortion[:, None, :], self.models[:, None])
        u = xy[..., 0] * self.fx[:, None] + self.cx[:, None]
        v = xy[..., 1] * self.fy[:, None] + self.cy[:, None]
        return torch.stack([u, v], -1), z

    def pixel_directions(self, index: int, pixels: Tensor | None = None) -> Tensor:
        """Unit ray directions in camera space for pixels of camera ``index`` (undistorting them).

        Args:
            index: camera index.
            pixels: [..., 2] pixel coordinates; default: all pixel centres, [H, W, 2].

        Returns:
            [..., 3] unit directions in OpenCV camera axes.
        """
        if pixels is None:
            h, w = int(self.heights[index]), int(self.widths[index])
            v, u = torch.meshgrid(
                torch.arange(h, dtype=torch.float32, device=self.device) + 0.5,
                torch.arange(w, dtype=torch.float32, device=self.device) + 0.5,
                indexing="ij",
            )
            pixels = torch.stack([u, v], -1)
        x = (pixels[..., 0] - self.cx[index]) / self.fx[index]
        y = (pixels[..., 1] - self.cy[index]) / self.fy[index]
        xy = torch.stack([x, y], -1)
        if int(self.models[index]) != 0:
            shape = xy.shape
            flat = xy.reshape(-1, 2).double()
            params = self.distortion[index].double().expand(flat.shape[0], 6)
            model = self.models[index].expand(flat.shape[0])
            xy = _undistort(flat, params, model).reshape(shape).to(xy.dtype)
        dirs = torch.cat([xy, torch.ones_like(xy[..., :1])], -1)
        return dirs / dirs.norm(dim=-1, keepdim=True)

    def rays(self, index: int, pixels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """World-space rays for camera ``index``.

        Args:
            index: camera index.
            pixels: [..., 2] pixel coordinates (default: every pixel centre); float64 pixels give float64 rays.

        Returns:
            origins [..., 3] and unit directions [..., 3] (default: [H, W, 3] for every pixel centre).
        """
        d_cam = self.pixel_directions(index, pixels)
        R = self.camtoworlds[index, :3, :3].to(d_cam.dtype)
        dirs = d_cam @ R.T
        origins = self.camtoworlds[index, :3, 3].to(d_cam.dtype).expand_as(dirs)
        return origins, dirs

    def undistort_maps(self, index: int) -> tuple[Tensor, "Cameras"]:
        """Sampling grid that turns camera ``index``'s distorted image into a pinhole image of the same size.

        Returns:
            grid [H, W, 2] for ``torch.nn.functional.grid_sample`` (align_corners=False) on the distorted image,
            and the pinhole camera (same pose and focal lengths, no distortion) of the undistorted image.
        """
        cam = self[index]
        h, w = int(cam.heights[0]), int(cam.widths[0])
        v, u = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
        xy = torch.stack([(u - cam.cx[0]) / cam.fx[0], (v - cam.cy[0]) / cam.fy[0]], -1).double()
        xy_d = _distort(xy, cam.distortion[0].double(), cam.models[0]).float()
        ud = xy_d[..., 0] * cam.fx[0] + cam.cx[0]
        vd = xy_d[..., 1] * cam.fy[0] + cam.cy[0]
        grid = torch.stack([ud / w * 2 - 1, vd / h * 2 - 1], -1)
        pinhole = replace(cam, models=torch.zeros_like(cam.models), distortion=torch.zeros_like(cam.distortion))
        return grid, pinhole


def undistort_image(image: Tensor, cameras: Cameras, index: int) -> tuple[Tensor, Cameras]:
    """Resample a distorted image [H, W, C] of camera ``index`` to a pinhole image; returns it and its camera."""
    grid, pinhole = cameras.undistort_maps(index)
    out = torch.nn.functional.grid_sample(
        image.permute(2, 0, 1)[None].float(), grid[None].to(image.device), align_corners=False, padding_mode="border"
    )[0].permute(1, 2, 0)
    return out, pinhole


def camera_focus(camtoworlds: Tensor | np.ndarray) -> np.ndarray:
    """The point closest (least squares) to all optical axes [3]: what a capture around an object looks at.

    Args:
        camtoworlds: [N, 4, 4] OpenCV camera-to-world matrices.
    """
    c2w = np.asarray(camtoworlds.detach().cpu() if isinstance(camtoworlds, Tensor) else camtoworlds, dtype=np.float64)
    A = np.zeros((3, 3))
    b = np.zeros(3)
    for o, d in zip(c2w[:, :3, 3], c2w[:, :3, 2]):
        P = np.eye(3) - np.outer(d, d) / max(float(d @ d), 1e-12)
        A += P
        b += P @ o
    if np.linalg.matrix_rank(A) < 3:  # parallel axes (e.g. one camera): fall back to the centres' mean
        return c2w[:, :3, 3].mean(0)
    return np.linalg.solve(A, b)


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 0.0, 1.0])) -> np.ndarray:
    """OpenCV camera-to-world [4, 4] looking from ``eye`` at ``target`` with world ``up`` (image y points down)."""
    eye, target, up = (np.asarray(a, dtype=np.float64) for a in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-8:  # looking along up: pick any perpendicular
        x = np.cross(z, np.array([1.0, 0.0, 0.0]))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = x, y, z, eye
    return c2w


def orbit_poses(
    n: int,
    radius: float,
    elevation_deg: float = 25.0,
    target=(0.0, 0.0, 0.0),
    up=(0.0, 0.0, 1.0),
    phase: float = 0.0,
    start=None,
) -> np.ndarray:
    """[n, 4, 4] OpenCV camera-to-world poses evenly spaced on a circle around ``target``, looking at it.

    Args:
        n: number of poses.
        radius: distance of every camera from ``target``.
        elevation_deg: angle of the cameras above the plane through ``target`` orthogonal to ``up``.
        target: [3] the point looked at (the circle's axis passes through it).
        up: [3] world up (unit or not); also the up direction of the images.
        phase: azimuth of the first pose in radians, counter-clockwise about ``up``.
        start: [3] direction of azimuth 0, projected onto the circle's plane (default: world x, or world y when
            ``up`` is along x).
    """
    target = np.asarray(target, dtype=np.float64)
    up = np.asarray(up, dtype=np.float64)
    up = up / np.linalg.norm(up)
    if start is None:
        start = [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0]
    e1 = np.asarray(start, dtype=np.float64)
    e1 = e1 - (e1 @ up) * up
    e1 = e1 / np.linalg.norm(e1)
    e2 = np.cross(up, e1)
    el = np.deg2rad(elevation_deg)
    out = []
    for i in range(n):
        az = phase + 2 * np.pi * i / n
        eye = target + radius * (np.cos(el) * (np.cos(az) * e1 + np.sin(az) * e2) + np.sin(el) * up)
        out.append(look_at(eye, target, up))
    return np.stack(out)
