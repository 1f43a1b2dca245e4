"""Browser viewer built on viser."""
