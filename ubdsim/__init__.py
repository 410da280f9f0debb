"""ubdsim: a simulator of User-Mode Linux's ubd block driver and its copy-on-write files.

Public entry points: `ubdsim.profiles.get_profile`, the COW format library in `ubdsim.cow`,
and the `ubdsim` command (`ubdsim.cli.main`).
"""
__version__ = "0.1.0"
