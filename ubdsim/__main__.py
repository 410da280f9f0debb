"""`python -m ubdsim` is the `ubdsim` command."""
import sys

from .cli import main

sys.exit(main())
