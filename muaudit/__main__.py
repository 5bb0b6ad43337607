"""``python -m muaudit``."""
from __future__ import annotations

import sys

from muaudit.cli import main

sys.exit(main())
