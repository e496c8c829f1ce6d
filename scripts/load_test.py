#!/usr/bin/env python
"""Serving load test: the example bot with rasa-meta vs the same bot with Rasa's DIET pipeline.

The test itself is ``research/load_test.py`` (its docstring lists the options):

    .venv/bin/python scripts/load_test.py                      # both configs, default bounds
    .venv/bin/python scripts/load_test.py --configs meta --requests 100
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from research.load_test import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
