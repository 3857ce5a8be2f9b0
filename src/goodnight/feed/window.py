"""The feed's window: the past week of clock-ins, and how far back a scroll may reach.

Everything that must agree on it reads it here: the SQL feed and its cursors, the Redis timelines' keys and
their expiry, account deletion and the seed. The SQL and Redis feeds answer byte for byte the same only
because they share these numbers.
"""

from __future__ import annotations

from datetime import timedelta

WINDOW_DAYS = 7
WINDOW = timedelta(days=WINDOW_DAYS)
# A cursor may pin a window this much older than now's (someone scrolling slowly), no more.
MAX_CURSOR_AGE = timedelta(days=1)
# How far back a page can reach: the window, pinned by a scroll's cursor up to MAX_CURSOR_AGE before now's.
REACH = WINDOW + MAX_CURSOR_AGE
