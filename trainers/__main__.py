"""``python -m trainers VERB`` from the repository root."""

import sys

from .cli import main

sys.exit(main())
