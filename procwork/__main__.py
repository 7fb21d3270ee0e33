"""``python -m procwork``: the procwork command."""

import sys

from procwork._cli import main

sys.exit(main())
