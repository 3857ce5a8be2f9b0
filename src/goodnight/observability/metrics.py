"""The Prometheus series Goodnight exports, and the calls the rest of the code makes to record them.

prometheus-client chooses its storage when it is first imported: values in this process, or, when
``PROMETHEUS_MULTIPROC_DIR`` is set (``goodnight serve --workers N`` sets it), memory-mapped files in that
folder, which ``/metrics`` adds up over every worker. So each gauge says how the processes' values combine:
``livesum`` for what each process holds (requests in flight, pool connections), ``livemostrecent`` for a
value every process samples alike (the outbox), ``livemax`` for "any process" (an open breaker). The ``live``
modes drop a process's value when it exits.

Label values come from closed sets only: route templates, a fixed list of methods, status codes, event kinds,
policy names and the reasons below. Never a user id, a raw path or a username: each distinct value is a new
series in every scrape from then on.
"""

from __future__ import annotations

import functools
from datetime import datetime

from prometheus_client import Counter, Gauge, Histogram

from goodnight.jobs.outbox import EventKind
from goodnight.kit.clock import utcnow

# Any path no route matches, and the requests the edge refuses before routing (413, 429, 503 overloaded).
UNMATCHED = "unmatched"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER = "other"
# An event kind this release does not know (an older or newer one's rows) is counted as "other".
EVENT_KINDS = frozenset(kind.value for kind in EventKind)
# The event whose application puts a clock-out into its followers' timelines.
FANOUT_KIND = EventKind.SLEEP_COMPLETED.value

# Why a feed page came from SQL. A page from Redis has the reason "none".
SERVED = "none"
NO_REDIS = "no_redis"  # no GOODNIGHT_REDIS_URL: the feed always comes from SQL
OFFSET = "offset"  # a later page of the original app's offset pagination: only SQL seeks by offset
BREAKER_OPEN = "breaker_open"  # Redis failed moments ago: skipped until the cool-down ends
LAGGING = "lagging"  # the outbox is behind (or not yet known to be caught up after a Redis failure)
COLD = "cold"  # the reader's timeline is missing (inactive, expired, or lost by Redis): rebuilt meanwhile
TOMBSTONES = "tombstones"  # a timeline so full of deleted records that SQL answers sooner
REDIS_ERROR = "redis_error"  # the Redis call failed (the breaker opens)
DATABASE_AWAY = "database_away"  # the page needed a query and the database is unreachable

HTTP_REQUESTS = Counter(
    "goodnight_http_requests_total",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "goodnight_http_request_duration_seconds",
    "Time from a request's arrival to the end of its response, by method and route template.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
HTTP_IN_FLIGHT = Gauge(
    "goodnight_http_requests_in_flight",
    "HTTP requests being served right now, over every worker.",
    multiprocess_mode="livesum",
)
FEED_PAGES = Counter(
    "goodnight_feed_pages_total",
    "Feed pages served, by source (redis or sql) and the reason a page came from SQL.",
    ["source", "reason"],
)
OUTBOX_EVENTS = Gauge(
    "goodnight_outbox_events",
    "Outbox events by state (pending, in_flight, dead), sampled every few seconds.",
    ["state"],
    multiprocess_mode="livemostrecent",
)
OUTBOX_OLDEST_PENDING_AGE = Gauge(
    "goodnight_outbox_oldest_pending_age_seconds",
    "Age of the oldest outbox event not yet applied (0 when none), sampled every few seconds.",
    multiprocess_mode="livemostrecent",
)
OUTBOX_PROCESSED = Counter(
    "goodnight_outbox_processed_total",
    "Outbox events a worker finished with, by kind and outcome (ok, retry, dead).",
    ["kind", "outcome"],
)
FANOUT_ENTRIES = Counter(
    "goodnight_fanout_entries_total",
    "Timeline entries written by fanout (one per follower reached per record).",
)
FANOUT_LAG = Histogram(
    "goodnight_fanout_lag_seconds",
    "Time from a clock-out's commit to its record being in its followers' timelines.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0),
)
REDIS_BREAKER_OPEN = Gauge(
    "goodnight_redis_breaker_open",
    "1 while a process serves feeds from SQL because Redis just failed.",
    multiprocess_mode="livemax",
)
DB_POOL_CONNECTIONS = Gauge(
    "goodnight_db_pool_connections",
    "Database connections by state (in_use, idle, overflow), over every process.",
    ["state"],
    multiprocess_mode="livesum",
)
DB_REPLICA_LAG = Gauge(
    "goodnight_db_replica_lag_seconds",
    "How far each read replica is behind the primary (+Inf while it does not answer), sampled every 0.5 s.",
    ["replica"],
    multiprocess_mode="livemax",
)
DB_READS = Counter(
    "goodnight_db_reads_total",
    "Reads routed between the primary and the read replicas, by target (primary or replica).",
    ["target"],
)
RATE_LIMITED = Counter(
    "goodnight_rate_limited_total",
    "Requests refused by a rate limit, by policy.",
    ["policy"],
)


def replica_sampled(replica: str, lag_seconds: float | None) -> None:
    DB_REPLICA_LAG.labels(replica).set(float("inf") if lag_seconds is None else lag_seconds)


def read_routed(target: str) -> None:
    DB_READS.labels(target).inc()


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else OTHER


class HttpRecorder:
    """The HTTP series of one process. Each label set's children are looked up once, then kept: the
    client's own lookup validates and locks on every call, which a request should not pay."""

    def __init__(self) -> None:
        self._counted: dict[tuple[str, str, int], Counter] = {}
        self._timed: dict[tuple[str, str], Histogram] = {}

    def started(self) -> None:
        HTTP_IN_FLIGHT.inc()

    def finished(self, method: str, route: str, status: int, seconds: float) -> None:
        HTTP_IN_FLIGHT.dec()
        key = (method, route, status)
        counted = self._counted.get(key)
        if counted is None:
            counted = self._counted[key] = HTTP_REQUESTS.labels(method, route, str(status))
        counted.inc()
        timed = self._timed.get((method, route))
        if timed is None:
            timed = self._timed[(method, route)] = HTTP_DURATION.labels(method, route)
        timed.observe(seconds)


@functools.cache
def _feed_pages(source: str, reason: str) -> Counter:
    """The series of one (source, reason), found once: ``labels()`` costs a feed page a few microseconds."""
    return FEED_PAGES.labels(source, reason)


def feed_from_redis() -> None:
    _feed_pages("redis", SERVED).inc()


def feed_from_sql(reason: str) -> None:
    _feed_pages("sql", reason).inc()


def _kind_label(kind: str) -> str:
    return kind if kind in EVENT_KINDS else OTHER


def event_applied(kind: str, created_at: datetime | None) -> None:
    """An outbox event was applied; a clock-out's also says how long its fanout took from the commit."""
    OUTBOX_PROCESSED.labels(_kind_label(kind), "ok").inc()
    if kind == FANOUT_KIND and created_at is not None:
        FANOUT_LAG.observe(max(0.0, (utcnow() - created_at).total_seconds()))


def event_failed(kind: str, *, dead: bool) -> None:
    """An outbox event failed: tried again later, or parked as dead."""
    OUTBOX_PROCESSED.labels(_kind_label(kind), "dead" if dead else "retry").inc()


def fanned_out(entries: int) -> None:
    FANOUT_ENTRIES.inc(entries)


def redis_breaker_opened() -> None:
    """Shown at once; the sampler clears it once the breaker lets requests through again."""
    REDIS_BREAKER_OPEN.set(1)


def rate_limited(policy: str) -> None:
    RATE_LIMITED.labels(policy).inc()
