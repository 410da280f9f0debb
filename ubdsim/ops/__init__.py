"""Pure operations behind the COW tools: each takes paths and options, returns a dataclass.

The command modules (`ubdsim/cli/*.py`) only parse arguments and render these results, so
the same operations serve tests, scripts and the demo without going through a shell.
"""
