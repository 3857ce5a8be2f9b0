"""Watching what a request holds while it hashes a password."""

from __future__ import annotations

import pytest
from sqlalchemy.pool import QueuePool

from goodnight.auth.passwords import HashSlot


def connections_held_while_hashing(monkeypatch: pytest.MonkeyPatch, pool: QueuePool) -> list[int]:
    """From now on, the database connections checked out at the start of every hash and verification."""
    checked_out: list[int] = []
    hash_password, verify_password = HashSlot.hash, HashSlot.verify

    async def hash_watched(slot: HashSlot, password: str) -> str:
        checked_out.append(pool.checkedout())
        return await hash_password(slot, password)

    async def verify_watched(slot: HashSlot, password_hash: str | None, password: str) -> bool:
        checked_out.append(pool.checkedout())
        return await verify_password(slot, password_hash, password)

    monkeypatch.setattr(HashSlot, "hash", hash_watched)
    monkeypatch.setattr(HashSlot, "verify", verify_watched)
    return checked_out
