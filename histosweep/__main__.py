"""`python -m histosweep`: the same as the `histosweep` command."""

import sys

from histosweep.cli import main

if __name__ == "__main__":
    sys.exit(main())
