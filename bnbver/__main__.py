"""``python -m bnbver``: the command line (:mod:`bnbver.cli`)."""

import sys

from bnbver.cli import main

sys.exit(main())
