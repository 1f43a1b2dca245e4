from recon.methods.gs.model import GSConfig, GaussianSplatting  # noqa: F401  (registers "gs")
