from recon.methods.gasp.model import Gasp  # noqa: F401  (registers "gasp")
