"""Bring your own capture: photos or videos -> a posed dataset (``recon data process``); see :mod:`.pipeline`."""

from .pipeline import ProcessConfig, process

__all__ = ["ProcessConfig", "process"]
