"""``python -m bacalhau``: the ``bacalhau`` command."""

import sys

from .cli import main

sys.exit(main())
