"""`python -m search.cli`: used to start worker processes, one per GPU slot."""

import sys

from search.cli import main

sys.exit(main())
