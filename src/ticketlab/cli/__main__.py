"""`python -m ticketlab.cli`: the same as the `ticketlab` command."""

import sys

from ticketlab.cli import main

sys.exit(main())
