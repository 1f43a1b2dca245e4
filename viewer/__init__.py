"""Browser viewer built on viser (installed as ``recon.viewer``).

- :func:`recon.viewer.app.serve_run`: ``recon view RUN``;
- :class:`recon.viewer.live.LiveViewer`: ``recon train ... --viewer``;
- everything is generic over methods: see docs/viewer.md ("For method authors") for what a method can offer.
"""
