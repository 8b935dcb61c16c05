"""``python -m accounting``: see accounting.cli."""
import sys

from .cli import main

sys.exit(main())
