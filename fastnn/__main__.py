"""``python -m fastnn`` runs the ``fastnn`` command line."""

import sys

from fastnn.cli import main

sys.exit(main())
