import sys

from bgmatrix.cli import main

sys.exit(main())
