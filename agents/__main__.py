"""``python -m agents`` is ``safetour``."""

import sys

from .cli import main

sys.exit(main())
