"""recon's mirror of gsplat's private ``meta`` keys (recon/render/gsplat_meta.py) against the pinned gsplat's sources.

Read from the installed gsplat's source with ``ast`` (no CUDA needed), so that a gsplat upgrade that renames or drops
a key fails here, loudly, instead of silently breaking densification on the CPU rasterizer.
"""

from __future__ import annotations

import ast
import inspect

import gsplat
import gsplat.rendering
import gsplat.strategy.default
import torch

from recon.render import gsplat_meta
from recon.render.gaussians import rasterize_gaussians


def _string_subscripts(tree: ast.AST, name: str) -> set[str]:
    """Constant string keys ``k`` of every ``name["k"]`` in ``tree``."""
    return {
        n.slice.value for n in ast.walk(tree)
        if isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name) and n.value.id == name
        and isinstance(n.slice, ast.Constant) and isinstance(n.slice.value, str)
    }  # fmt: skip


def _meta_keys_written_by_rasterization() -> set[str]:
    """Keys of the dict literals that gsplat's ``rasterization`` assigns to or merges into ``meta``."""
    tree = ast.parse(inspect.getsource(gsplat.rendering.rasterization))
    keys = set()
    for n in ast.walk(tree):
        d = None
        if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "meta" for t in n.targets):
            d = n.value
        elif isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "update" \
                and isinstance(n.func.value, ast.Name) and n.func.value.id == "meta" and n.args:
            d = n.args[0]
        if isinstance(d, ast.Dict):
            keys |= {k.value for k in d.keys if isinstance(k, ast.Constant)}
    return keys


def test_pinned_gsplat_is_the_mirrored_release():
    assert gsplat.__version__ == gsplat_meta.GSPLAT_VERSION, (
        f"gsplat {gsplat.__version__} is installed, recon/render/gsplat_meta.py mirrors {gsplat_meta.GSPLAT_VERSION}: "
        "check the keys below against the new release, then update GSPLAT_VERSION"
    )


def test_default_strategy_reads_exactly_the_mirrored_keys():
    src = inspect.getsource(gsplat.strategy.default)
    read = _string_subscripts(ast.parse(src), "info")
    assert gsplat.strategy.default.DefaultStrategy.key_for_gradient == "means2d"
    assert read | {"means2d"} == gsplat_meta.STRATEGY_KEYS, f"DefaultStrategy now reads {sorted(read)}"


def test_mirrored_keys_are_keys_gsplat_writes():
    written = _meta_keys_written_by_rasterization()
    assert len(written) > 10, "could not read gsplat's meta dict; the test itself needs updating"
    assert gsplat_meta.MIRRORED_KEYS <= written, f"gsplat no longer writes {sorted(gsplat_meta.MIRRORED_KEYS - written)}"
    assert gsplat_meta.STRATEGY_KEYS <= gsplat_meta.MIRRORED_KEYS
    assert not gsplat_meta.RECON_KEYS & written, "a recon-only key now means something in gsplat"


def test_cpu_rasterizer_returns_exactly_the_mirror():
    n = 5
    means = torch.tensor([[0.0, 0.0, 3.0]]).repeat(n, 1) + torch.linspace(-0.2, 0.2, n)[:, None]
    quats = torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1)
    K = torch.tensor([[[20.0, 0, 8], [0, 20.0, 8], [0, 0, 1]]])
    _, _, meta = rasterize_gaussians(means, quats, torch.full((n, 3), 0.1), torch.full((n,), 0.5), torch.rand(n, 3),
                                     torch.eye(4)[None], K, 16, 16)  # fmt: skip
    assert meta.keys() == gsplat_meta.MIRRORED_KEYS | gsplat_meta.RECON_KEYS


def test_merged_views_look_like_one_batched_render():
    metas = []
    for c in range(3):
        m2d = torch.zeros(1, 4, 2, requires_grad=True)
        (m2d * (c + 1)).sum().backward()
        metas.append({"means2d": m2d, "radii": torch.full((1, 4, 2), c), "width": 8, "height": 6, "n_cameras": 1})
    merged = gsplat_meta.merge_views(metas)
    assert merged["n_cameras"] == 3 and merged["radii"].shape == (3, 4, 2) and merged["width"] == 8
    assert torch.equal(merged["means2d"].grad[:, 0, 0], torch.tensor([1.0, 2.0, 3.0]))
    assert merged["means2d"].absgrad is None
    metas[1]["means2d"] = torch.zeros(1, 4, 2, requires_grad=True)  # a view without gradient counts zeros
    assert torch.equal(gsplat_meta.merge_views(metas)["means2d"].grad[:, 0, 0], torch.tensor([1.0, 0.0, 3.0]))
    for m in metas:
        m["means2d"] = torch.zeros(1, 4, 2, requires_grad=True)
    assert gsplat_meta.merge_views(metas) is None  # none has one


def test_merged_views_gather_every_process_and_normalise_mixed_sizes():
    def meta(scale, width, height):
        m2d = torch.zeros(1, 2, 2, requires_grad=True)
        (m2d * scale).sum().backward()
        return {"means2d": m2d, "radii": torch.ones(1, 2, 2, dtype=torch.int32), "width": width, "height": height, "n_cameras": 1}

    # a stand-in for Collective.all_gather with two ranks whose views are the same
    merged = gsplat_meta.merge_views([meta(1.0, 8, 6)], gather=lambda t: torch.cat([t, t], 0))
    assert merged["n_cameras"] == 2 and merged["radii"].shape == (2, 2, 2) and (merged["width"], merged["height"]) == (8, 6)
    # views of different sizes: gradients in pixels of a 2 x 2 image, so width / 2 and height / 2 are 1
    merged = gsplat_meta.merge_views([meta(1.0, 8, 6), meta(1.0, 4, 10)])
    assert (merged["width"], merged["height"]) == (2, 2)
    assert merged["means2d"].grad[:, 0].tolist() == [[4.0, 3.0], [2.0, 5.0]]
