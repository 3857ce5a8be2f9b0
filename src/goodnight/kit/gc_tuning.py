"""The cyclic garbage collector, tuned for a long-running server process.

After start-up a worker holds a hundred thousand or so long-lived objects (modules, the app, SQLAlchemy's
mappers and compiled caches). Left in the collected generations, every full collection walks them all again,
and under load the young generation fills often enough that such collections run every few hundred
requests. Frozen once start-up is done, they are never scanned again; a larger young generation then makes
the remaining collections rarer. Request objects die young and are freed by reference counting anyway: the
collector is only for cycles.
"""

from __future__ import annotations

import gc

# Allocations (net of frees) before a young-generation collection: 700 by default, a few requests' worth.
YOUNG_GENERATION_THRESHOLD = 10_000


def freeze_after_start_up() -> None:
    """Collect once, then move everything alive into the permanent generation; call when serving starts."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, older, oldest)
