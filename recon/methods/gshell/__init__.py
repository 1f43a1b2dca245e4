from recon.methods.gshell.model import GShell  # noqa: F401  (registers "gshell")
