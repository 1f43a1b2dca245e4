"""Structure from motion with pycolmap (COLMAP's maintained Python bindings): SIFT features on the CPU, matching,
incremental mapping; the largest model is kept.

COLMAP's functions block and do not report progress themselves, so features are extracted in chunks of images (a
progress step per chunk) and the mapper reports each image it registers through its callback.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
import numpy as np

from recon.errors import ReconError

MATCHERS = ("auto", "exhaustive", "sequential", "vocab")
CAMERA_MODELS = ("pinhole", "simple_pinhole", "simple_radial", "radial", "opencv", "full_opencv", "opencv_fisheye")


@dataclass
class SfmOptions:
    matcher: str = "auto"  # auto: sequential for video frames, exhaustive for photos
    camera_model: str = "radial"
    camera_mode: str = "single"  # single (one phone, one video), per_folder (one camera per video), per_image
    mask_dir: Path | None = None  # COLMAP convention: <mask_dir>/<image name>.png, 0 = ignore
    vocab_tree: Path | None = None  # for --matcher vocab and loop detection in sequential matching
    seed: int = 0
    threads: int = -1
    colmap_log: bool = False


@dataclass
class SfmResult:
    reconstruction: object  # pycolmap.Reconstruction (the largest model)
    registered: list[str]
    unregistered: list[str]
    models: int  # how many separate models the mapper made (more than 1: the images fell apart into groups)
    seconds: dict[str, float] = field(default_factory=dict)
    features_per_image: float = 0.0
    verified_pairs: int = 0
    matcher: str = ""


class Progress:
    """What the pipeline reports: ``stage(name, total)`` starts a stage, ``advance(n)`` moves it on."""

    def stage(self, name: str, total: int | None) -> None: ...

    def advance(self, n: int = 1) -> None: ...


def _camera_groups(names: list[str], mode: str) -> list[list[str]]:
    """Images that share a camera: all (single), those of one folder (per_folder), or each alone (per_image: one
    group, a camera per image)."""
    if mode == "per_folder":
        groups: dict[str, list[str]] = {}
        for n in names:
            groups.setdefault(str(Path(n).parent), []).append(n)
        return list(groups.values())
    return [list(names)]


def _query(db_path: Path, sql: str, *args) -> list[tuple]:
    """Rows of one query on COLMAP's database."""
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(str(db_path))) as con:
        return con.execute(sql, args).fetchall()


def _camera_of(db_path: Path, name: str) -> int:
    return int(_query(db_path, "SELECT camera_id FROM images WHERE name = ?", name)[0][0])


def _database_stats(db_path: Path) -> tuple[float, int]:
    """(mean keypoints per image, image pairs with verified geometry) from COLMAP's database."""
    rows = _query(db_path, "SELECT rows FROM keypoints")
    pairs = _query(db_path, "SELECT COUNT(*) FROM two_view_geometries WHERE rows >= 15")[0][0]
    return (float(np.mean([r[0] for r in rows])) if rows else 0.0), int(pairs)


def check_options(matcher: str, camera_model: str, vocab_tree: Path | None) -> None:
    """A bad --matcher, --camera-model or a vocab matcher without its tree: one line, before any work starts."""
    if matcher not in MATCHERS:
        raise ReconError(f"unknown --matcher {matcher!r} (choose from {', '.join(MATCHERS)})")
    if camera_model not in CAMERA_MODELS:
        raise ReconError(f"unknown --camera-model {camera_model!r} (choose from {', '.join(CAMERA_MODELS)})")
    if matcher == "vocab" and vocab_tree is None:
        raise ReconError("--matcher vocab needs --vocab-tree FILE (COLMAP's vocabulary tree; this machine cannot download one)")


def run_sfm(image_dir: Path, names: list[str], work_dir: Path, opts: SfmOptions, progress: Progress, video: bool = False) -> SfmResult:
    """Pose the images ``names`` (relative to ``image_dir``); COLMAP's database goes to ``work_dir``. ``opts`` have
    passed :func:`check_options` (``process`` checks them before any work starts)."""
    import pycolmap

    matcher = opts.matcher if opts.matcher != "auto" else ("sequential" if video else "exhaustive")
    pycolmap.set_random_seed(int(opts.seed))
    # COLMAP logs hundreds of lines per run through glog (and its own error line when mapping fails, which the
    # ReconError below says better); keep it quiet unless asked for.
    pycolmap.logging.minloglevel = 0 if opts.colmap_log else 3
    work_dir.mkdir(parents=True, exist_ok=True)
    db = work_dir / "database.db"
    seconds: dict[str, float] = {}

    # ---- features, in chunks so that there is progress to show
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = opts.camera_model.upper()
    if opts.mask_dir is not None:
        reader.mask_path = str(opts.mask_dir)
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.num_threads = opts.threads
    t = time.perf_counter()
    progress.stage("features (SIFT)", len(names))
    chunk = max(1, min(16, len(names) // 10 or 1))
    mode = pycolmap.CameraMode.PER_IMAGE if opts.camera_mode == "per_image" else pycolmap.CameraMode.SINGLE
    for group in _camera_groups(names, opts.camera_mode):
        # The group's first chunk creates its camera; the later chunks attach their images to it.
        reader.existing_camera_id = -1
        for i in range(0, len(group), chunk):
            part = group[i : i + chunk]
            pycolmap.extract_features(db, image_dir, image_names=part, camera_mode=mode, reader_options=reader,
                                      extraction_options=extraction, device=pycolmap.Device.cpu)
            if opts.camera_mode != "per_image" and i == 0:
                reader.existing_camera_id = _camera_of(db, part[0])
            progress.advance(len(part))
    seconds["features"] = time.perf_counter() - t

    # ---- matching
    t = time.perf_counter()
    progress.stage(f"matching ({matcher})", None)
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = opts.threads
    if matcher == "exhaustive":
        pycolmap.match_exhaustive(db, matching_options=matching, device=pycolmap.Device.cpu)
    elif matcher == "sequential":
        pairing = pycolmap.SequentialPairingOptions()
        if opts.vocab_tree is not None:
            pairing.loop_detection = True
            pairing.vocab_tree_path = str(opts.vocab_tree)
        pycolmap.match_sequential(db, matching_options=matching, pairing_options=pairing, device=pycolmap.Device.cpu)
    else:
        pairing = pycolmap.VocabTreePairingOptions()
        pairing.vocab_tree_path = str(opts.vocab_tree)
        pycolmap.match_vocabtree(db, matching_options=matching, pairing_options=pairing, device=pycolmap.Device.cpu)
    seconds["matching"] = time.perf_counter() - t
    features, pairs = _database_stats(db)

    # ---- incremental mapping
    t = time.perf_counter()
    progress.stage("mapping (incremental)", len(names))
    mapping = pycolmap.IncrementalPipelineOptions()
    mapping.num_threads = opts.threads
    if hasattr(mapping, "random_seed"):
        mapping.random_seed = int(opts.seed)
    models = pycolmap.incremental_mapping(db, image_dir, work_dir / "models", options=mapping,
                                          next_image_callback=lambda: progress.advance(1))
    seconds["mapping"] = time.perf_counter() - t
    if not models:
        raise ReconError(_failure_hint(len(names), features, pairs), image_dir)
    best = max(models.values(), key=lambda r: r.num_reg_images())
    registered = sorted(im.name for im in best.images.values() if im.has_pose)
    unregistered = sorted(set(names) - set(registered))
    return SfmResult(best, registered, unregistered, len(models), seconds, features, pairs, matcher)


def _failure_hint(n_images: int, features: float, pairs: int) -> str:
    """One line on why no model came out, from what the database shows."""
    if features < 100:
        why = f"few features ({features:.0f} per image): textureless, blurry or very small images"
    elif pairs < max(1, n_images // 2):
        why = f"few image pairs share enough matches ({pairs}): too little overlap between the photos"
    else:
        why = "the mapper found no initial pair it could trust (e.g. photos taken from one spot, pure rotation)"
    return f"structure from motion posed no images of {n_images}: {why}"


def reconstruction_stats(rec) -> dict:
    """Registered images, 3D points, mean track length, mean reprojection error (px), observations per image."""
    return {
        "registered_images": int(rec.num_reg_images()),
        "points3d": int(rec.num_points3D()),
        "mean_track_length": float(rec.compute_mean_track_length()),
        "mean_reprojection_error_px": float(rec.compute_mean_reprojection_error()),
        "mean_observations_per_image": float(rec.compute_mean_observations_per_reg_image()),
    }
