"""``python -m procwork``: the procwork command (see :mod:`procwork.cli`)."""

import sys

from procwork.cli import main

sys.exit(main())
