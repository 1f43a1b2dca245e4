"""Data: SceneData, the dataset readers and their one entry point :func:`load_scene`, scene info.

    from recon.data import load_scene
    scene = load_scene("data/fox")            # format detected from the folder
    scene = load_scene("data/lego", "blender", downscale=2)
"""

from recon.data.readers import FORMATS, detect_format, get_reader, load_scene, register_reader
from recon.data.scene import ArrayImages, ImageCache, ImageFiles, SceneData, every_nth_split, read_image_file

__all__ = [
    "FORMATS",
    "ArrayImages",
    "ImageCache",
    "ImageFiles",
    "SceneData",
    "detect_format",
    "every_nth_split",
    "get_reader",
    "load_scene",
    "read_image_file",
    "register_reader",
]
