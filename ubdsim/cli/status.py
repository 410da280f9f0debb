"""Exit codes every ubdsim command shares; scripts may rely on them.

Commands that run a guest (`run`, `vm`) return the guest's own status instead (128+N when a
signal killed it); their --help says so.
"""
from __future__ import annotations

OK = 0            # done as asked
ERROR = 1         # refused or failed: bad input file, mismatch, locked file, I/O error
USAGE = 2         # ubdsim's own command line was wrong (argparse uses 2 as well)
INTERRUPTED = 130 # stopped by Ctrl-C / SIGINT; nothing half-written is left behind

EXIT_CODES_HELP = """exit codes:
  0    success
  1    refused or failed (bad or mismatched file, locked file, I/O error); one line on stderr
  2    usage error in ubdsim's own arguments
  130  interrupted (SIGINT); no half-written output is left behind
  143  stopped by SIGTERM (129: SIGHUP), cleaned up as for SIGINT"""
