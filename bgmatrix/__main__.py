"""``python -m bgmatrix <verb>``: the same command line as ``bgmatrix <verb>``."""

import sys

try:
    from bgmatrix.cli import main
except KeyboardInterrupt:  # Ctrl-C before the CLI could take over: still one line and 130
    print("bgmatrix: interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
