"""Exports of a trained run: a registry of kinds (:mod:`recon.export.kinds`), each with its writer and the
capabilities a method needs for it; ``Method.export_kinds`` names the kinds a method offers."""

from __future__ import annotations

from recon.export.kinds import EXPORT_KINDS, export_run, kinds_for

__all__ = ["EXPORT_KINDS", "export_run", "kinds_for"]
