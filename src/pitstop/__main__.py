"""``python -m pitstop``: the ``pitstop`` command."""

import sys

from ._cli import main

sys.exit(main())
