"""Argon2id password hashing, off the event loop and behind a gate.

A hash is deliberately slow and big (~0.2 s of CPU and ``argon2_memory_kib``, 64 MiB by default). Run
without a bound, a flood of logins starts hundreds at once: each takes forever because they share the CPUs,
and together they take gigabytes. So a process hashes in at most ``hash_concurrency`` slots at once, and a
request that cannot get a slot within ``hash_wait_seconds``, or finds a full queue, is refused with 503
``overloaded``: a flood costs bounded memory, holds few requests in flight, and the requests that do get in
finish in about the time one hash takes.

Callers hold no database connection while they wait or hash (see ``auth.service.login`` and
``users.service.register``): hashing must never pin the connection pool.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

import anyio
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from goodnight.config import Settings
from goodnight.errors import Overloaded, retry_after

T = TypeVar("T")

# Hashing threads run at a lower CPU priority than the event loop: during a login flood every other request
# keeps its latency, and the logins (a few a day per person) are the ones that wait.
HASHING_NICENESS = 10
# How much of the latest hash time counts in the running estimate (an exponential moving average).
HASH_TIME_WEIGHT = 0.2


def _yield_the_cpu() -> None:
    if sys.platform == "linux":  # where nice() applies to the calling thread only, not the whole process
        os.nice(HASHING_NICENESS)


class Passwords:
    def __init__(self, settings: Settings) -> None:
        self._hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
        )
        slots = settings.resolved_hash_concurrency()
        self._gate = anyio.Semaphore(slots, fast_acquire=True)
        self._wait_seconds = settings.hash_wait_seconds
        self._slots = slots
        self._waiting = 0
        # As many threads as slots: even a hash whose request was cancelled, and so gave its slot back, only
        # queues here, so no more than ``slots`` hashes ever hold their memory at once.
        threads = ThreadPoolExecutor(slots, thread_name_prefix="argon2", initializer=_yield_the_cpu)
        # Checked against when the username does not exist, so a miss costs what a wrong password costs.
        started = time.perf_counter()
        decoy = self._hasher.hash("goodnight-decoy-password")
        self.hash_time = HashTime(time.perf_counter() - started)
        self._slot = HashSlot(self._hasher, threads, decoy, self.hash_time)

    def queue_is_full(self) -> bool:
        """Whether a request queueing now would time out anyway: the slots work through about
        ``slots * wait / hash time`` requests within the wait, and a longer queue would only hold requests
        (and in-flight places, which signed-in reads need) until their wait ran out, to refuse them then."""
        capacity = self._slots * self._wait_seconds / self.hash_time.seconds
        return self._gate.value == 0 and self._waiting >= capacity

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[HashSlot]:
        """Hold a hashing slot for the block, or raise ``Overloaded`` if none frees up within the wait.

        A login takes its slot before it reads the user, so a refused login has cost no query either. One that
        finds the queue full is refused at once.
        """
        if self.queue_is_full():
            raise Overloaded(headers=retry_after(self._wait_seconds))
        self._waiting += 1
        try:
            with anyio.fail_after(self._wait_seconds):
                await self._gate.acquire()
        except TimeoutError:
            # Every slot has been busy for the whole wait: hashes are queueing faster than they finish.
            raise Overloaded(headers=retry_after(self._wait_seconds)) from None
        finally:
            self._waiting -= 1
        try:
            yield self._slot
        finally:
            self._gate.release()

    async def hash(self, password: str) -> str:
        async with self.slot() as slot:
            return await slot.hash(password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        async with self.slot() as slot:
            return await slot.verify(password_hash, password)


@dataclass
class HashTime:
    """How long one hash takes here and now (it grows when the CPUs are shared), from the hashes run."""

    seconds: float

    def record(self, seconds: float) -> None:
        self.seconds += HASH_TIME_WEIGHT * (seconds - self.seconds)


@dataclass(frozen=True)
class HashSlot:
    """Hashing for whoever holds a slot (see ``Passwords.slot``); use it only inside that block."""

    _hasher: PasswordHasher
    _threads: ThreadPoolExecutor
    _decoy_hash: str
    hash_time: HashTime

    async def hash(self, password: str) -> str:
        return await self._in_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches; with no hash (an unknown user) a decoy is checked, so a miss costs
        what a wrong password costs."""
        return await self._in_thread(self._verify, password_hash, password)

    def _verify(self, password_hash: str | None, password: str) -> bool:
        try:
            self._hasher.verify(password_hash or self._decoy_hash, password)
        except (VerificationError, InvalidHashError):
            return False
        return password_hash is not None

    async def _in_thread(self, work: Callable[..., T], *args: str | None) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._threads, self._timed, work, *args)

    def _timed(self, work: Callable[..., T], *args: str | None) -> T:
        """Run ``work`` and record how long it took, measured in the hashing thread: timed from the event
        loop, a busy loop's delay in picking up the result would count as hashing, and the queue would be
        judged full (and logins refused) because the loop was busy, not because hashes were slow."""
        started = time.perf_counter()
        try:
            return work(*args)
        finally:
            self.hash_time.record(time.perf_counter() - started)
