"""Counts of fuzz cases run, by kind. Its own module: pytest loads conftest.py as a top-level `conftest`
module while tests import `tests.reliability.conftest`, and both must share one counter."""

from __future__ import annotations

from collections import Counter

TALLY: Counter[str] = Counter()
