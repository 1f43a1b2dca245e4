"""recon: 3D reconstruction and rendering from images."""

__version__ = "0.1.0"
