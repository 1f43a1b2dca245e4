from recon.methods.r3dg.model import R3DGConfig, RelightableGaussians  # noqa: F401  (registers "r3dg")
