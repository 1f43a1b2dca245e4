"""The one Gaussian rasterizer: `rasterize_gaussians`, gsplat on CUDA and our own C++/OpenMP kernel on CPU.

Backends (``backend=``):
    "gsplat"  CUDA tensors: a thin call into ``gsplat.rasterization`` (gsplat 1.5.3).
    "cpu"     CPU tensors: fused C++ projection (``_ProjectCPU``; the torch projection below is used instead when
              viewmats/Ks need gradients), SH in torch (``recon.render.sh``), then the C++ tile kernel
              (``_RasterizeCPU``), both with hand-written backwards; sources in ``recon.kernels`` (cuda/).
    "torch"   any device: the same torch projection, then the pure-torch pair compositor
              ``recon.kernels.raster_torch`` (the kernel's twin; slower, memory ~ number of (Gaussian, pixel) pairs).
    "auto"    "gsplat" for CUDA tensors, "cpu" otherwise.

The CPU/torch path reproduces gsplat 1.5.3's maths (``fully_fused_projection`` + ``rasterize_to_pixels``):
EWA splatting with the perspective Jacobian (x/z, y/z clamped to 1.3x the half field of view), eps2d added to the
2D covariance (antialiased mode scales opacity by sqrt(det / det_blurred)), the opacity-aware radius
``ceil(min(3.33, sqrt(2 ln(255 o))) * sqrt(diag(cov2d)))`` per axis ([C, N, 2] radii, as gsplat 1.5.3), culling
outside near/far, off screen, radius_clip and opacity < 1/255, ``alpha = min(0.999, o exp(-sigma))`` with
``sigma = 0.5 d^T cov2d^-1 d``, alpha < 1/255 skipped, a pixel stops before the Gaussian that would bring its
transmittance to <= 1e-4, pixel centres at +0.5, front to back in (depth, index) order. Note that gsplat 1.5.3
clamps alpha at 0.999 (not 0.99) and uses the opacity-aware radius rather than a plain 3-sigma one; we follow
gsplat so that CPU and CUDA agree. With that radius every pixel outside a Gaussian's box has alpha < 1/255, so
the tiled result equals a dense every-Gaussian-against-every-pixel evaluation (which is what the tests check).
"""

from __future__ import annotations

import math
from typing import Dict, Literal, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from recon.render.gsplat_meta import make_meta
from recon.render.sh import eval_sh
from recon.rotations import quat_to_rotmat

RenderMode = Literal["RGB", "D", "ED", "RGB+D", "RGB+ED"]
Backend = Literal["auto", "cpu", "torch", "gsplat"]

ALPHA_MIN = 1.0 / 255.0


# ---------------------------------------------------------------------------------------------------------------
# Projection (torch, autograd)
# ---------------------------------------------------------------------------------------------------------------
def project_gaussians(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    viewmats: Tensor,  # [C, 4, 4]
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    antialiased: bool = False,
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Optional[Tensor]]:
    """EWA projection of 3D Gaussians into C pinhole cameras (gsplat's ``fully_fused_projection``, unpacked).

    Returns:
        radii [C, N, 2] int32 (0 where culled), means2d [C, N, 2], depths [C, N] (camera z), conics [C, N, 3]
        (upper triangle of the inverse blurred 2D covariance), opacities [C, N] (times the compensation in
        antialiased mode), compensations [C, N] or None. Only entries with radii > 0 are meaningful; the others
        are finite (so that their zero gradients stay finite) but arbitrary.
    """
    C = viewmats.shape[0]
    Rv = viewmats[:, :3, :3]  # [C, 3, 3]
    tv = viewmats[:, :3, 3]  # [C, 3]
    p_cam = torch.einsum("cij,nj->cni", Rv, means) + tv[:, None, :]  # [C, N, 3]
    xc, yc, zc = p_cam.unbind(-1)
    with torch.no_grad():
        in_range = (zc >= near_plane) & (zc <= far_plane)
    z = torch.where(in_range, zc, torch.ones_like(zc))  # behind-camera entries would give inf/NaN gradients
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [C, 1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    rz = 1.0 / z
    u, v = xc * rz, yc * rz
    means2d = torch.stack([fx * u + cx, fy * v + cy], dim=-1)  # [C, N, 2]

    # Jacobian of the projection, with x/z and y/z clamped to 1.3x the half field of view (gsplat / 3DGS) so that
    # Gaussians far outside the frustum do not get huge, wrongly stretched footprints.
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    uc = torch.clamp(u, min=-(cx / fx + 0.3 * tan_x), max=(width - cx) / fx + 0.3 * tan_x)
    vc = torch.clamp(v, min=-(cy / fy + 0.3 * tan_y), max=(height - cy) / fy + 0.3 * tan_y)
    # Rows of J @ Rv: J = [[fx/z, 0, -fx uc/z], [0, fy/z, -fy vc/z]].
    r0, r1, r2 = Rv[:, None, 0, :], Rv[:, None, 1, :], Rv[:, None, 2, :]  # [C, 1, 3]
    A = torch.stack(
        [(fx * rz)[..., None] * (r0 - uc[..., None] * r2), (fy * rz)[..., None] * (r1 - vc[..., None] * r2)], dim=-2
    )  # [C, N, 2, 3]
    # cov2d = (J Rv) (R S)(R S)^T (J Rv)^T = B B^T with B = (J Rv)(R S): no 3x3 covariance is ever formed.
    RS = quat_to_rotmat(quats) * scales[:, None, :]  # [N, 3, 3]
    B = torch.matmul(A, RS)  # [C, N, 2, 3]
    b0, b1 = B.unbind(-2)
    a = (b0 * b0).sum(-1)
    b = (b0 * b1).sum(-1)
    c = (b1 * b1).sum(-1)
    det_orig = a * c - b * b
    a = a + eps2d
    c = c + eps2d
    det = a * c - b * b
    with torch.no_grad():
        det_ok = det > 0
    det = torch.where(det_ok, det, torch.ones_like(det))
    inv_det = 1.0 / det
    conics = torch.stack([c * inv_det, -b * inv_det, a * inv_det], dim=-1)  # [C, N, 3]

    compensations = None
    opac = opacities[None, :].expand(C, -1)
    if antialiased:
        compensations = torch.sqrt(torch.clamp(det_orig * inv_det, min=0.0))
        opac = opac * compensations

    with torch.no_grad():
        o = opac.detach()
        # Opacity-aware extent (gsplat 1.5.3; arXiv 2402.00525 B.2): beyond it alpha < 1/255.
        extend = torch.sqrt(2.0 * torch.log(torch.clamp(o / ALPHA_MIN, min=1.0))).clamp(max=3.33)
        rx = torch.ceil(extend * torch.sqrt(a.detach()))
        ry = torch.ceil(extend * torch.sqrt(c.detach()))
        mx, my = means2d.detach().unbind(-1)
        valid = (
            in_range
            & det_ok
            & (o >= ALPHA_MIN)
            & ~((rx <= radius_clip) & (ry <= radius_clip))
            & (mx + rx > 0)
            & (mx - rx < width)
            & (my + ry > 0)
            & (my - ry < height)
        )
        radii = torch.stack([rx, ry], dim=-1).masked_fill_(~valid[..., None], 0).to(torch.int32)
    return radii, means2d, zc, conics, opac, compensations


class _ProjectCPU(torch.autograd.Function):
    """Fused C++ projection (``recon.kernels.project_cpu``); same outputs as ``project_gaussians`` except that
    culled entries are zero. Gradients flow to means, quats, scales and opacities (not to the cameras)."""

    @staticmethod
    def forward(ctx, means, quats, scales, opacities, viewmats, Ks, width, height, eps2d, near, far, clip, aa):
        from recon.kernels.build import load_cpu_rasterizer

        ext = load_cpu_rasterizer()
        ins = [t.detach().contiguous() for t in (means, quats, scales, opacities)]
        radii, means2d, depths, conics, opac = ext.project_fwd(
            *ins, viewmats.detach(), Ks.detach(), width, height, eps2d, near, far, clip, aa
        )
        ctx.save_for_backward(*ins, viewmats.detach(), Ks.detach(), radii)
        ctx.cfg = (width, height, eps2d, aa)
        ctx.mark_non_differentiable(radii)
        return radii, means2d, depths, conics, opac

    @staticmethod
    def backward(ctx, _v_radii, v_means2d, v_depths, v_conics, v_opac):
        from recon.kernels.build import load_cpu_rasterizer

        means, quats, scales, opacities, viewmats, Ks, radii = ctx.saved_tensors
        width, height, eps2d, aa = ctx.cfg
        CN = radii.shape[:-1]

        def grad_or_zeros(v, *tail):  # outputs that did not reach the loss come back as None
            return torch.zeros(CN + tail, dtype=means.dtype) if v is None else v.contiguous()

        v_means, v_quats, v_scales, v_opac_in = load_cpu_rasterizer().project_bwd(
            means, quats, scales, opacities, viewmats, Ks, width, height, eps2d, aa, radii,
            grad_or_zeros(v_means2d, 2), grad_or_zeros(v_depths), grad_or_zeros(v_conics, 3), grad_or_zeros(v_opac),
        )  # fmt: skip
        return v_means, v_quats, v_scales, v_opac_in, None, None, None, None, None, None, None, None, None


def _project(backend, means, quats, scales, opacities, viewmats, Ks, width, height, **kw):
    """The C++ projection on the CPU backend, unless camera gradients are needed (then torch autograd)."""
    if backend == "cpu" and not (viewmats.requires_grad or Ks.requires_grad):
        radii, means2d, depths, conics, opac = _ProjectCPU.apply(
            means, quats, scales, opacities, viewmats, Ks, width, height, kw["eps2d"], kw["near_plane"],
            kw["far_plane"], kw["radius_clip"], kw["antialiased"],
        )  # fmt: skip
        return radii, means2d, depths, conics, opac
    return project_gaussians(means, quats, scales, opacities, viewmats, Ks, width, height, **kw)[:5]


def _camera_centres(viewmats: Tensor) -> Tensor:
    """World-space camera centres [C, 3] of world-to-camera matrices [C, 4, 4]: -R^T t."""
    R, t = viewmats[:, :3, :3], viewmats[:, :3, 3]
    return -torch.einsum("cji,cj->ci", R, t)


# ---------------------------------------------------------------------------------------------------------------
# C++ kernel autograd glue
# ---------------------------------------------------------------------------------------------------------------
def composite_cpu(
    xy: Tensor,  # [M, 2]
    conics: Tensor,  # [M, 3]
    colors: Tensor,  # [M, D] (D may be 0)
    opacities: Tensor,  # [M]
    depths: Tensor,  # [M]
    radii: Tensor,  # [M, 2] int32
    image_ids: Tensor,  # [M] int32, or empty for the unpacked layout (element c*N + n belongs to image c)
    backgrounds: Optional[Tensor],  # [I, D] or None
    n_images: int,
    width: int,
    height: int,
    tile_size: int,
    depth_channel: bool = False,
    want_median: bool = False,
    want_max_weight: bool = False,
):
    """Tile binning + the C++ forward on flat, contiguous, detached per-element arrays (no autograd).

    Returns (tile offsets, flattened ids, (render, alphas, T final, last ids, median depth, median ids,
    per-element max α·T)); the optional outputs are empty tensors unless asked for.
    """
    from recon.kernels.build import load_cpu_rasterizer

    ext = load_cpu_rasterizer()
    offsets, flat = ext.bin_gaussians(xy, radii, depths, image_ids, n_images, width, height, tile_size)
    outs = ext.rasterize_fwd(
        xy, conics, colors, opacities, depths, radii, backgrounds, depth_channel, want_median, offsets, flat,
        n_images, width, height, tile_size, want_max_weight,
    )  # fmt: skip
    return offsets, flat, tuple(outs)


class _CompositeArgs(NamedTuple):
    """Everything a compositor takes: the projected Gaussians, one entry per (camera, Gaussian) element
    ([C, N, ...] unpacked or [M] = [nnz, ...] packed), and the image layout.

    One structure for :func:`_composite` and :class:`_RasterizeCPU`. Autograd tracks only tensors passed to
    ``apply`` positionally, so the CPU compositor receives it unpacked (``_RasterizeCPU.apply(*args)``) and
    rebuilds it; its backward returns its gradients in the same structure.
    """

    means2d: Tensor  # [..., 2]; meta["means2d"] itself (not reshaped before the CPU compositor: absgrad lands on it)
    conics: Tensor  # [..., 3]
    colors: Optional[Tensor]  # [..., D], or None in depth-only modes
    opacities: Tensor  # [...]
    depths: Tensor  # [...]
    backgrounds: Optional[Tensor]  # [I, D] or None
    radii: Tensor  # [..., 2] int32
    image_ids: Optional[Tensor]  # [M] int32 (packed layout) or None (unpacked)
    n_images: int
    width: int
    height: int
    tile_size: int
    depth_channel: bool
    want_median: bool
    absgrad: bool

    def flat_elements(self) -> "_CompositeArgs":
        """The per-element tensors except ``means2d`` reshaped to flat [M, ...] arrays."""
        M = self.radii.numel() // 2
        flat = lambda t, *tail: None if t is None else t.reshape((M,) + tail)  # noqa: E731
        colors = None if self.colors is None else flat(self.colors, self.colors.shape[-1])
        return self._replace(
            conics=flat(self.conics, 3), colors=colors, opacities=flat(self.opacities), depths=flat(self.depths),
            radii=flat(self.radii, 2),
        )  # fmt: skip


class _RasterizeCPU(torch.autograd.Function):
    """Tile compositing on CPU. Inputs: the fields of a :class:`_CompositeArgs` with flat per-element arrays
    (unpacked [C*N] or packed [nnz]); ``means2d`` may keep its [C, N, 2] shape."""

    @staticmethod
    def forward(ctx, *fields):
        a = _CompositeArgs(*fields)
        M = a.conics.shape[0]
        dtype = a.conics.dtype
        xy = a.means2d.detach().reshape(M, 2).contiguous()
        con = a.conics.detach().contiguous()
        col = (
            a.colors.detach().contiguous()
            if a.colors is not None
            else torch.empty(M, 0, dtype=dtype, device=a.conics.device)
        )
        opa = a.opacities.detach().contiguous()
        dep = a.depths.detach().contiguous()
        rad = a.radii.reshape(M, 2).to(torch.int32).contiguous()
        ids = (
            a.image_ids.to(torch.int32).contiguous()
            if a.image_ids is not None
            else torch.empty(0, dtype=torch.int32)
        )
        bg = a.backgrounds.detach().contiguous() if a.backgrounds is not None else None
        offsets, flat, (render, alphas, tfinal, last, med, med_id, _) = composite_cpu(
            xy, con, col, opa, dep, rad, ids, bg, a.n_images, a.width, a.height, a.tile_size, a.depth_channel,
            a.want_median,
        )  # fmt: skip
        ctx.save_for_backward(a.means2d, xy, con, col, opa, dep, rad, bg, offsets, flat, tfinal, last, med_id)
        # the layout only: tensors held on ctx outside save_for_backward would leak
        ctx.args = a._replace(
            means2d=None, conics=None, colors=None, opacities=None, depths=None, backgrounds=None, radii=None,
            image_ids=None,
        )  # fmt: skip
        ctx.has_colors = a.colors is not None
        return render, alphas, med

    @staticmethod
    def backward(ctx, v_render: Tensor, v_alphas: Tensor, v_med: Tensor):
        from recon.kernels.build import load_cpu_rasterizer

        ext = load_cpu_rasterizer()
        means2d, xy, con, col, opa, dep, rad, bg, offsets, flat, tfinal, last, med_id = ctx.saved_tensors
        a: _CompositeArgs = ctx.args
        v_render = v_render.contiguous()
        v_alphas = v_alphas.contiguous()
        v_xy, v_con, v_col, v_opa, v_dep, v_abs = ext.rasterize_bwd(
            xy, con, col, opa, dep, rad, bg, a.depth_channel, a.absgrad, offsets, flat, tfinal, last,
            v_render, v_alphas, a.n_images, a.width, a.height, a.tile_size,
        )  # fmt: skip
        if a.absgrad:
            # Read by DefaultStrategy(absgrad=True) as info["means2d"].absgrad (same convention as gsplat).
            means2d.absgrad = v_abs.reshape(means2d.shape)
        if a.want_median and v_med is not None:
            sel = med_id.reshape(-1) >= 0
            v_dep = v_dep.index_add(0, med_id.reshape(-1)[sel].long(), v_med.reshape(-1)[sel])
        v_bg = None
        if bg is not None and _CompositeArgs(*ctx.needs_input_grad).backgrounds:
            D = bg.shape[-1]
            v_bg = (v_render[..., :D] * tfinal[..., None]).sum(dim=(1, 2))
        grads = dict(
            means2d=v_xy.reshape(means2d.shape),
            conics=v_con,
            colors=v_col if ctx.has_colors else None,
            opacities=v_opa,
            depths=v_dep if (a.depth_channel or a.want_median) else None,
            backgrounds=v_bg,
        )
        return tuple(grads.get(name) for name in _CompositeArgs._fields)


def _composite(backend: str, args: _CompositeArgs) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """Flattens per-camera tensors to per-element arrays and runs the chosen compositor.

    Returns render [I, H, W, X], alphas [I, H, W, 1] and the median depth [I, H, W, 1] (None unless asked for).
    """
    args = args.flat_elements()
    if backend == "cpu":
        render, alphas, med = _RasterizeCPU.apply(*args)
        return render, alphas, (med if args.want_median else None)
    from recon.kernels.raster_torch import rasterize_to_pixels_torch

    M = args.radii.shape[0]
    return rasterize_to_pixels_torch(
        args.means2d.reshape(M, 2), args.conics, args.colors, args.opacities, args.depths, args.radii,
        args.image_ids, args.n_images, args.width, args.height, backgrounds=args.backgrounds,
        depth_channel=args.depth_channel, want_median=args.want_median,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# Public entry point
# ---------------------------------------------------------------------------------------------------------------
def rasterize_gaussians(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    colors: Tensor,  # [(C,) N, D] or [(C,) N, K, 3]
    viewmats: Tensor,  # [C, 4, 4]
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    *,
    sh_degree: Optional[int] = None,
    backgrounds: Optional[Tensor] = None,  # [C, D]
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    render_mode: RenderMode = "RGB",
    return_median: bool = False,
    eps2d: float = 0.3,
    packed: bool = False,
    absgrad: bool = False,
    rasterize_mode: Literal["classic", "antialiased"] = "classic",
    radius_clip: float = 0.0,
    tile_size: int = 16,
    backend: Backend = "auto",
) -> Tuple[Tensor, Tensor, Dict]:
    """Rasterizes N 3D Gaussians into C pinhole cameras (gsplat ``rasterization`` semantics, 1.5.3).

    Args:
        means: Gaussian centres, world space. [N, 3]
        quats: rotations as wxyz quaternions, need not be normalised. [N, 4]
        scales: activated (positive) scales. [N, 3]
        opacities: activated opacities in [0, 1]. [N]
        colors: with ``sh_degree=None``, features [N, D] or per-view [C, N, D] for any D >= 1 (RGB, normals,
            BRDF parameters, a 1-channel score...); with ``sh_degree`` set, SH coefficients [N, K, 3] or
            [C, N, K, 3] with K >= (sh_degree + 1)^2, evaluated along camera-centre-to-Gaussian directions and
            turned into colour as ``max(SH + 0.5, 0)``.
        viewmats: world-to-camera matrices, OpenCV axes (x right, y down, z forward). [C, 4, 4]
        Ks: pinhole intrinsics. [C, 3, 3]
        width, height: image size in pixels.
        sh_degree: SH degree 0..3, or None for plain features.
        backgrounds: colour behind the Gaussians, blended with the final transmittance. [C, D]
        near_plane, far_plane: Gaussians whose camera z is outside [near, far] are culled.
        render_mode: "RGB" (features), "D" (accumulated depth sum w z), "ED" (expected depth
            sum w z / sum w), "RGB+D", "RGB+ED" (depth appended as the last channel).
        return_median: also return the median depth [C, H, W, 1] in ``meta["render_median"]``: the depth of the
            last Gaussian drawn while the transmittance in front of it is > 0.5, i.e. where T crosses 0.5
            (gsplat 2DGS convention; 0 where nothing is drawn). Differentiable w.r.t. that Gaussian's depth.
            CPU/torch backends only; on CUDA it switches to the torch backend.
        eps2d: added to the 2D covariance diagonal (low-pass filter).
        packed: return per-(camera, Gaussian) results packed as [nnz, ...] with ``meta["camera_ids"]`` and
            ``meta["gaussian_ids"]`` instead of [C, N, ...].
        absgrad: also accumulate sum over pixels of |dL/dmeans2d| into ``meta["means2d"].absgrad`` (AbsGS).
        rasterize_mode: "classic" or "antialiased" (Mip-Splatting opacity compensation sqrt(det / det_blur)).
        radius_clip: cull Gaussians whose pixel radius is <= this in both axes.
        tile_size: tile edge in pixels.
        backend: "auto" (gsplat on CUDA, "cpu" otherwise), "cpu" (C++ kernel), "torch" (pure torch, any
            device), "gsplat" (CUDA).

    Returns:
        render_colors [C, H, W, X] with X = D, 1 or D + 1 by render mode; render_alphas [C, H, W, 1];
        meta dict. On the CPU/torch backends meta has (shapes unpacked / packed):
        ``means2d`` [C, N, 2] / [nnz, 2] (non-leaf, receives the true gradient; call ``retain_grad()``),
        ``radii`` [C, N, 2] / [nnz, 2] int32 (0 = not visible), ``depths``, ``conics`` [.., 3], ``opacities``,
        ``visibility`` [C, N] bool, ``camera_ids`` / ``gaussian_ids`` ([nnz] or None), ``width``, ``height``,
        ``n_cameras``, ``n_batches``, ``tile_size``, ``tile_width``, ``tile_height``, ``backend`` - everything
        gsplat's ``DefaultStrategy`` reads (with ``absgrad=True`` also ``meta["means2d"].absgrad`` after
        backward). On the gsplat backend meta is gsplat's own dict plus ``backend``.

    Example:
        >>> colors, alphas, meta = rasterize_gaussians(means, quats, scales, opacities, rgb, viewmats, Ks, 64, 48)
        >>> colors.shape, alphas.shape
        (torch.Size([1, 48, 64, 3]), torch.Size([1, 48, 64, 1]))

    .. note:: No gradient flows to ``viewmats`` or ``Ks`` on the CUDA backend (as gsplat); the CPU/torch
        projection is plain autograd, so camera gradients do flow there.
    """
    if backend == "auto":
        backend = "gsplat" if means.is_cuda else "cpu"
    if backend == "gsplat" and return_median:
        backend = "torch"  # gsplat's 3DGS kernels have no median depth
    if render_mode not in ("RGB", "D", "ED", "RGB+D", "RGB+ED"):
        raise ValueError(f"unknown render_mode {render_mode!r}")
    if rasterize_mode not in ("classic", "antialiased"):
        raise ValueError(f"unknown rasterize_mode {rasterize_mode!r}")
    if backend == "gsplat":
        return _rasterize_gsplat(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree=sh_degree,
            backgrounds=backgrounds, near_plane=near_plane, far_plane=far_plane, render_mode=render_mode,
            eps2d=eps2d, packed=packed, absgrad=absgrad, rasterize_mode=rasterize_mode, radius_clip=radius_clip,
            tile_size=tile_size,
        )  # fmt: skip
    if backend == "cpu" and means.device.type != "cpu":
        raise ValueError("backend='cpu' needs CPU tensors (use backend='torch' or 'gsplat' on CUDA)")
    if backend not in ("cpu", "torch"):
        raise ValueError(f"unknown backend {backend!r}")

    N = means.shape[0]
    C = viewmats.shape[0]
    assert means.shape == (N, 3), means.shape
    assert quats.shape == (N, 4), quats.shape
    assert scales.shape == (N, 3), scales.shape
    assert opacities.shape == (N,), opacities.shape
    assert viewmats.shape == (C, 4, 4), viewmats.shape
    assert Ks.shape == (C, 3, 3), Ks.shape

    radii, means2d, depths, conics, opac = _project(
        backend, means, quats, scales, opacities, viewmats, Ks, width, height, eps2d=eps2d, near_plane=near_plane,
        far_plane=far_plane, radius_clip=radius_clip, antialiased=rasterize_mode == "antialiased",
    )  # fmt: skip
    visibility = (radii > 0).all(dim=-1)  # [C, N]

    feats: Optional[Tensor] = None
    if render_mode in ("RGB", "RGB+D", "RGB+ED"):
        if sh_degree is None:
            assert colors.dim() in (2, 3) and colors.shape[-2] == N, colors.shape
            feats = colors if colors.dim() == 3 else colors[None].expand(C, -1, -1)  # [C, N, D]
        else:
            assert colors.dim() in (3, 4) and colors.shape[-3] == N and colors.shape[-1] == 3, colors.shape
            dirs = means[None, :, :] - _camera_centres(viewmats)[:, None, :]  # [C, N, 3]
            shs = colors if colors.dim() == 4 else colors[None]
            feats = torch.clamp_min(eval_sh(sh_degree, dirs, shs) + 0.5, 0.0)  # [C, N, 3]
    depth_channel = render_mode in ("D", "ED", "RGB+D", "RGB+ED")
    if backgrounds is not None:
        if feats is None:
            backgrounds = None  # depth-only modes: zero background, as gsplat
        else:
            assert backgrounds.shape == (C, feats.shape[-1]), backgrounds.shape

    camera_ids = gaussian_ids = image_ids = None
    if packed:
        camera_ids, gaussian_ids = torch.nonzero(visibility, as_tuple=True)
        means2d = means2d[camera_ids, gaussian_ids]  # [nnz, 2]: the non-leaf the strategy reads
        conics, depths, opac = conics[camera_ids, gaussian_ids], depths[camera_ids, gaussian_ids], opac[camera_ids, gaussian_ids]
        radii = radii[camera_ids, gaussian_ids]
        if feats is not None:
            feats = colors[gaussian_ids] if (sh_degree is None and colors.dim() == 2) else feats[camera_ids, gaussian_ids]
        image_ids = camera_ids

    render, alphas, median = _composite(backend, _CompositeArgs(
        means2d, conics, feats, opac, depths, backgrounds, radii, image_ids, C, width, height, tile_size,
        depth_channel, return_median, absgrad,
    ))  # fmt: skip
    if render_mode in ("ED", "RGB+ED"):
        render = torch.cat([render[..., :-1], render[..., -1:] / alphas.clamp(min=1e-10)], dim=-1)

    tile_w, tile_h = math.ceil(width / tile_size), math.ceil(height / tile_size)
    meta = make_meta(
        means2d=means2d, radii=radii, depths=depths, conics=conics, opacities=opac, visibility=visibility,
        camera_ids=camera_ids, gaussian_ids=gaussian_ids, width=width, height=height, n_cameras=C,
        tile_size=tile_size, tile_width=tile_w, tile_height=tile_h, backend=backend,
    )  # fmt: skip
    if return_median:
        meta["render_median"] = median
    return render, alphas, meta


def _rasterize_gsplat(means, quats, scales, opacities, colors, viewmats, Ks, width, height, *, backgrounds,
                      packed, render_mode, **kw):  # fmt: skip
    """CUDA: straight into gsplat.rasterization; only papers over gsplat 1.5.3's packed + backgrounds assert."""
    from gsplat import rasterization

    from recon.kernels.gsplat_cuda import ensure_built

    ensure_built()  # gsplat's CUDA kernels: built once per torch/CUDA, announced, under recon's build lock

    blend_bg = packed and backgrounds is not None and render_mode not in ("D", "ED")
    render, alphas, meta = rasterization(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height,
        backgrounds=None if blend_bg else backgrounds, packed=packed, render_mode=render_mode, **kw,
    )  # fmt: skip
    if blend_bg:
        # gsplat 1.5.3 asserts backgrounds.shape == (D,) when packed; blending here is the same maths
        # (colour + T_final * bg) with the same gradients, and leaves the depth channel alone.
        D = backgrounds.shape[-1]
        bg = (1.0 - alphas) * backgrounds[:, None, None, :]
        render = torch.cat([render[..., :D] + bg, render[..., D:]], dim=-1) if render.shape[-1] > D else render + bg
    meta["backend"] = "gsplat"
    return render, alphas, meta
