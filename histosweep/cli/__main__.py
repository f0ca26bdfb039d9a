"""`python -m histosweep.cli`: used to start worker processes, one per GPU slot."""

import sys

from histosweep.cli import main

if __name__ == "__main__":
    sys.exit(main())
