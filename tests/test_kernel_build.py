"""How the compiled CPU kernels are found and built (recon.kernels.build, build_lock, kernel_spec, compile.py).

The installed build must serve every command with no compiler, no ninja and any PATH; a run-time build must
never be blocked by a killed build, must say why it compiles, and a damaged module must give one clear line.
Everything that touches a build runs in a temporary RECON_CACHE, in subprocesses where a process has to die.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from recon.errors import ReconError
from recon.kernels import build, kernel_spec
from recon.kernels.build_lock import BuildLock

REPO = Path(__file__).resolve().parents[1]

# A tiny rasterization through the kernels, in a fresh process: prints how the kernels were built, and fails if
# the image is not what the pure-torch twin gives.
_RASTER_SNIPPET = textwrap.dedent(
    """
    import json, sys, torch
    sys.path.insert(0, %r)
    from raster_reference import random_scene
    from recon.kernels.build import kernel_info
    from recon.render.gaussians import rasterize_gaussians
    scene, W, H = random_scene(n=50, n_cameras=1, seed=3)
    args = [scene[k].detach() for k in ("means", "quats", "scales", "opacities", "colors", "viewmats", "Ks")]
    a, _, _ = rasterize_gaussians(*args, W, H, backend="cpu")
    b, _, _ = rasterize_gaussians(*args, W, H, backend="torch")
    assert torch.allclose(a, b, atol=1e-5), float((a - b).abs().max())
    info = kernel_info()
    print(json.dumps({"kind": info["kind"], "path": info["path"], "arch": info["arch"]}))
    """
) % str(Path(__file__).resolve().parent)


def _env(**extra) -> dict:
    env = dict(os.environ)
    env.pop("RECON_KERNELS", None)
    env.update({k: v for k, v in extra.items() if v is not None})
    return env


def _run(code: str, timeout: float = 120, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env=_env(**env), cwd=REPO)


# ------------------------------------------------------------------------------------------------ the lock
_HOLD = textwrap.dedent(
    """
    import sys, time
    from recon.kernels.build_lock import BuildLock
    with BuildLock(sys.argv[1], purpose="test holder"):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
    """
)


def _start_holder(lock: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(lock), str(seconds)], stdout=subprocess.PIPE, text=True,
                            cwd=REPO)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_lock_of_a_killed_holder_is_free_at_once(tmp_path, sig):
    lock = tmp_path / "build.lock"
    holder = _start_holder(lock, 600)
    holder.send_signal(sig)
    holder.wait(timeout=30)
    said = []
    t0 = time.monotonic()
    with BuildLock(lock, purpose="next", timeout=10, say=said.append) as taken:
        assert taken.holder()["pid"] == os.getpid() and taken.holder()["purpose"] == "next"
    assert time.monotonic() - t0 < 5 and said == []


def test_waiting_on_a_live_holder_says_so_once_then_proceeds(tmp_path):
    lock = tmp_path / "build.lock"
    holder = _start_holder(lock, 1.5)
    said = []
    with BuildLock(lock, purpose="waiter", timeout=60, say=said.append, poll=0.05):
        pass
    holder.wait(timeout=30)
    assert len(said) == 1, said
    assert f"pid {holder.pid}" in said[0] and "test holder" in said[0] and str(lock) in said[0]


def test_lock_timeout_names_the_lock(tmp_path):
    lock = tmp_path / "build.lock"
    holder = _start_holder(lock, 600)
    try:
        with pytest.raises(TimeoutError, match="build.lock"):
            BuildLock(lock, purpose="waiter", timeout=0.3, say=lambda m: None, poll=0.05).acquire()
    finally:
        holder.kill()
        holder.wait()


# A run-time build whose compile step is replaced (no compiler is run): ``sleep`` stands in for a long build,
# ``fail`` for a compiler error. The lock, the folder layout and the messages are the real ones.
_FAKE_BUILD = textwrap.dedent(
    """
    import sys, time
    from recon.kernels import build
    def fake_compile(out, reason):
        print("compiling:", reason, file=sys.stderr, flush=True)
        if sys.argv[1] == "sleep":
            time.sleep(600)
        raise build.KernelBuildError("compiling the CPU kernels with 'fake' failed")
    build._compile_into = fake_compile
    try:
        build.load_cpu_rasterizer()
    except build.KernelBuildError as e:
        print("error:", str(e).splitlines()[0], file=sys.stderr, flush=True)
        sys.exit(3)
    """
)


def test_a_build_killed_with_sigkill_does_not_block_the_next_command(tmp_path):
    env = _env(RECON_CACHE=str(tmp_path), RECON_KERNELS="runtime")
    first = subprocess.Popen([sys.executable, "-c", _FAKE_BUILD, "sleep"], stderr=subprocess.PIPE, text=True,
                             env=env, cwd=REPO)
    assert first.stderr.readline().startswith("compiling:")  # it holds the lock now
    locks = list((tmp_path / "kernels").glob("*.lock"))
    assert len(locks) == 1 and json.loads(locks[0].read_text())["pid"] == first.pid
    first.kill()
    first.wait(timeout=30)
    t0 = time.monotonic()
    second = subprocess.run([sys.executable, "-c", _FAKE_BUILD, "fail"], capture_output=True, text=True, env=env,
                            cwd=REPO, timeout=60)
    assert time.monotonic() - t0 < 30
    assert second.returncode == 3
    assert "waiting for" not in second.stderr
    assert "compiling: RECON_KERNELS=runtime" in second.stderr
    assert "error: compiling the CPU kernels with 'fake' failed" in second.stderr


# ------------------------------------------------------------------------------------------ the installed build
def test_installed_build_is_present_and_used():
    """scripts/setup.sh installs with --no-build-isolation, which compiles the kernels: they must be there."""
    path = build.installed_path()
    assert path is not None and path.is_file(), "no installed kernels: install with `pip install --no-build-isolation -e .`"
    info = json.loads(kernel_spec.info_path(path).read_text())
    assert info["sources"] == kernel_spec.source_digest() and info["arch"] in kernel_spec.ARCHES
    assert info["flags"] == kernel_spec.compile_args(info["arch"])


def test_installed_build_runs_without_compiler_ninja_or_path(tmp_path):
    r = _run(_RASTER_SNIPPET, PATH="", CXX="false", RECON_CACHE=str(tmp_path), RECON_KERNELS="installed")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["kind"] == "installed"
    assert "compiling" not in r.stderr
    assert not (tmp_path / "kernels").exists()


def test_path_order_changes_nothing(tmp_path):
    venv_bin = str(Path(sys.executable).parent)
    plain = ":".join(p for p in os.environ.get("PATH", "").split(":") if p and p != venv_bin)
    keys, kinds = [], []
    for path in (f"{venv_bin}:{plain}", f"{plain}:{venv_bin}", plain):
        r = _run(_RASTER_SNIPPET + "\nfrom recon.kernels.build import runtime_build_dir\nprint(runtime_build_dir())",
                 PATH=path, RECON_CACHE=str(tmp_path))
        assert r.returncode == 0, r.stderr[-3000:]
        assert "compiling" not in r.stderr
        *_, kind_line, key_line = r.stdout.strip().splitlines()
        kinds.append(json.loads(kind_line)["kind"])
        keys.append(key_line)
    assert kinds == ["installed"] * 3
    assert len(set(keys)) == 1  # the run-time build's key does not depend on which ninja comes first either


def test_damaged_installed_build_is_one_clear_line(tmp_path):
    src = build.installed_path()
    assert src is not None
    info = json.loads(kernel_spec.info_path(src).read_text())
    broken = tmp_path / src.name
    broken.write_bytes(src.read_bytes()[:4096])  # truncated: never handed to dlopen (that can die of SIGBUS)
    kernel_spec.info_path(broken).write_text(json.dumps(info))
    module, why = build._load_installed(broken)
    assert module is None and "\n" not in why
    assert why.startswith(f"the installed kernels {broken} is damaged (4096 bytes, built as ")
    # same size, other bytes
    broken.write_bytes(b"\0" * info["module_bytes"])
    assert "checksum differs" in build._load_installed(broken)[1]
    # a file that matches its description but is no library: dlopen's own error, in one line
    broken.write_bytes(b"not an ELF file")
    kernel_spec.info_path(broken).write_text(json.dumps({**info, **kernel_spec.module_checksum(broken)}))
    module, why = build._load_installed(broken)
    assert module is None and why.startswith(f"the installed kernels {broken} cannot be loaded (") and "\n" not in why
    # ... and with RECON_KERNELS=installed the CLI prints it as one line with the way to rebuild
    code = textwrap.dedent(
        f"""
        from pathlib import Path
        from recon.kernels import build
        build.installed_path = lambda: Path({str(broken)!r})
        from recon.cli import main
        raise SystemExit(main(["train", "--method", "gs", "--max-steps", "1", "--output-dir", {str(tmp_path / 'out')!r}]))
        """
    )
    r = _run(code, RECON_KERNELS="installed", RECON_CACHE=str(tmp_path))
    assert r.returncode == 2, r.stderr[-3000:]
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith("recon: error:")]
    assert len(lines) == 1 and "cannot be loaded" in lines[0] and "pip install --no-build-isolation" in lines[0]
    assert "Traceback" not in r.stdout + r.stderr


def test_stale_or_foreign_build_description_is_not_loaded(tmp_path):
    src = build.installed_path()
    info = json.loads(kernel_spec.info_path(src).read_text())
    fake = tmp_path / src.name
    fake.write_bytes(b"not loaded")  # never imported: the description is checked first
    desc = kernel_spec.info_path(fake)
    for change, expected in (({"torch": "0.0.1"}, "built for torch 0.0.1"),
                             ({"sources": "0" * 16}, "sources changed"),
                             ({"flags": ["-O0"]}, "compile flags changed"),
                             ({"arch": "native", "cpu": "deadbeef"}, "another CPU")):
        desc.write_text(json.dumps({**info, **change}))
        module, why = build._load_installed(fake)
        assert module is None and expected in why, why
    desc.unlink()
    assert "no readable build description" in build._load_installed(fake)[1]


# ------------------------------------------------------------------------------------------ the run-time build
def test_runtime_build_key_covers_its_inputs(monkeypatch, tmp_path):
    monkeypatch.setenv("RECON_CACHE", str(tmp_path))
    base = build.runtime_build_dir("portable")
    assert base.parent == tmp_path / "kernels"
    assert build.runtime_build_dir("native") != base
    monkeypatch.setattr(kernel_spec, "source_digest", lambda root=None: "f" * 16)
    assert build.runtime_build_dir("portable") != base
    monkeypatch.undo()
    monkeypatch.setenv("RECON_CACHE", str(tmp_path))
    monkeypatch.setattr(kernel_spec, "compiler_identity", lambda: "/opt/other/g++: g++ 99")
    assert build.runtime_build_dir("portable") != base


def test_damaged_runtime_build_is_rebuilt(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("RECON_CACHE", str(tmp_path))
    out = build.runtime_build_dir()
    out.mkdir(parents=True)
    (out / (kernel_spec.RUNTIME_NAME + ".so")).write_bytes(b"\x7fELF truncated")
    (out / (kernel_spec.RUNTIME_NAME + kernel_spec.INFO_SUFFIX)).write_text("{}")
    calls = []

    def fake_compile(dest, reason):
        calls.append((dest, reason))
        raise build.KernelBuildError("compile step reached")

    monkeypatch.setattr(build, "_compile_into", fake_compile)
    with pytest.raises(build.KernelBuildError, match="compile step reached"):
        build._load_runtime("test")
    err = capsys.readouterr().err
    assert "cannot be loaded" in err and "rebuilding it" in err
    assert calls == [(out, "test")]
    assert not (out / (kernel_spec.RUNTIME_NAME + kernel_spec.INFO_SUFFIX)).exists()


def test_build_errors_are_user_errors_with_a_way_out(monkeypatch, tmp_path):
    assert issubclass(build.KernelBuildError, ReconError)
    monkeypatch.setattr(build, "_MODULES", {})
    monkeypatch.setenv("RECON_CACHE", str(tmp_path))
    monkeypatch.setenv("RECON_KERNELS", "runtime")
    monkeypatch.setenv("CXX", "no-such-c++")
    with pytest.raises(build.KernelBuildError, match="no C\\+\\+ compiler is found.*backend='torch'"):
        build.load_cpu_rasterizer()
    monkeypatch.setenv("RECON_KERNELS", "sometimes")
    with pytest.raises(build.KernelBuildError, match="RECON_KERNELS='sometimes' is not one of auto, installed, runtime"):
        build.load_cpu_rasterizer()


def test_runtime_build_compiles_the_same_kernels(tmp_path):
    """A real run-time build (compile.py, ~1-2 min): it is announced, lands in the keyed folder with its
    description, is found by the next process without compiling, and renders what the installed build renders."""
    env = dict(RECON_CACHE=str(tmp_path), RECON_KERNELS="runtime")
    first = _run(_RASTER_SNIPPET, timeout=1800, **env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "recon: compiling the CPU kernels (RECON_KERNELS=runtime)" in first.stderr
    assert "recon: compiled the CPU kernels in" in first.stderr
    info = json.loads(first.stdout.strip().splitlines()[-1])
    assert info["kind"] == "runtime" and Path(info["path"]).parent.parent == tmp_path / "kernels"
    assert not list(Path(info["path"]).parent.glob("build-*"))  # the temporary build folder is gone
    second = _run(_RASTER_SNIPPET, **env)
    assert second.returncode == 0 and "compiling" not in second.stderr
    # bit-identical renders from the installed and the run-time build (same sources, same flags)
    render = _RASTER_SNIPPET.replace("print(json.dumps(", "torch.save(a, sys.argv[1]); print(json.dumps(")
    outs = []
    for mode in ("runtime", "installed"):
        f = tmp_path / f"{mode}.pt"
        r = subprocess.run([sys.executable, "-c", render, str(f)], capture_output=True, text=True, timeout=120,
                           env=_env(RECON_CACHE=str(tmp_path), RECON_KERNELS=mode), cwd=REPO)
        assert r.returncode == 0, r.stderr[-3000:]
        outs.append(f)
    import torch

    assert torch.equal(torch.load(outs[0]), torch.load(outs[1]))


# ------------------------------------------------------------------------------------------ gsplat's CUDA build
def test_gsplat_cuda_build_is_keyed_locked_and_announced(monkeypatch, tmp_path):
    from recon.kernels import gsplat_cuda

    monkeypatch.setenv("RECON_CACHE", str(tmp_path))
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    monkeypatch.setattr(gsplat_cuda, "_DONE", False)
    path_before = os.environ.get("PATH", "")
    seen = {}

    def fake_backend_build():  # what gsplat's first CUDA import does: compile into TORCH_EXTENSIONS_DIR
        root = Path(os.environ["TORCH_EXTENSIONS_DIR"])
        seen["root"], seen["path"] = root, os.environ["PATH"]
        lock = root.with_name(root.name + ".lock")
        seen["holder"] = json.loads(lock.read_text())["pid"]
        (root / "gsplat_cuda").mkdir(parents=True)
        (root / "gsplat_cuda" / "gsplat_cuda.so").write_bytes(b"built")

    said = []
    gsplat_cuda.ensure_built(fake_backend_build, say=said.append)
    assert seen["root"].parent == tmp_path / "gsplat" and "torch" in seen["root"].name
    assert seen["holder"] == os.getpid()
    assert os.environ["PATH"] == path_before  # restored
    if kernel_spec.ninja_dir() is not None:
        assert seen["path"].split(os.pathsep)[0] == kernel_spec.ninja_dir()
    assert len(said) == 2 and said[0].startswith("recon: compiling gsplat's CUDA kernels") and "compiled" in said[1]
    # once per process; and a later process finds the build and says nothing
    gsplat_cuda.ensure_built(lambda: pytest.fail("imported twice"), say=said.append)
    monkeypatch.setattr(gsplat_cuda, "_DONE", False)
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR")
    quiet = []
    gsplat_cuda.ensure_built(lambda: None, say=quiet.append)
    assert quiet == []
