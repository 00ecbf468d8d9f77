"""``python -m quantspec.cli``: the same as the ``quantspec`` command."""

import sys

from quantspec.cli import main

sys.exit(main())
