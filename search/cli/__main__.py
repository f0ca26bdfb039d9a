"""`python -m search.cli`: used to start worker processes, one per GPU slot."""

import sys

from search.cli import main

if __name__ == "__main__":
    sys.exit(main())
