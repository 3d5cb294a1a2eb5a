"""``python -m aiobudget``: the same as the ``aiobudget`` command."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
