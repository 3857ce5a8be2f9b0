"""Seed a small graph straight through the ORM and print a reader's token, for wrk runs against the feed.

    uv run python bench/feed_probe.py --followings 150 > /tmp/token
    wrk -t2 -c32 -d10s -s bench/bearer.lua http://127.0.0.1:8000/api/v1/sleep_records/followings

Passwords are hashed once and shared: hashing thousands of them would take minutes and measure nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import random
from datetime import timedelta

from goodnight.auth.passwords import Passwords
from goodnight.auth.tokens import Tokens
from goodnight.config import get_settings
from goodnight.db import Database
from goodnight.kit.clock import utcnow
from goodnight.kit.ids import new_id
from goodnight.migrate import upgrade_to_head
from goodnight.models import Follow, SleepRecord, User


async def seed(followings: int, nights: int, seed: int) -> str:
    settings = get_settings()
    await upgrade_to_head(settings)
    database = Database(settings)
    rng = random.Random(seed)  # noqa: S311  (reproducible data, not secrets)
    password_hash = await Passwords(settings).hash("benchmark-password")
    now = utcnow()
    prefix = new_id().hex[-8:]

    def user(name: str) -> User:
        return User(
            id=new_id(),
            username=name,
            username_key=name.lower(),
            password_hash=password_hash,
            followers_count=0,
            followings_count=0,
        )

    reader = user(f"r{prefix}")
    reader.followings_count = followings
    people = [user(f"p{prefix}_{index}") for index in range(followings)]
    async with database.writer() as session:
        session.add_all([reader, *people])
        await session.flush()
        for person in people:
            person.followers_count = 1
            session.add(Follow(follower_id=reader.id, followed_id=person.id, active=True, followed_at=now))
            for night in range(nights, 0, -1):
                start = now - timedelta(days=night, hours=rng.uniform(0, 3))
                length = timedelta(seconds=rng.randint(4 * 3600, 10 * 3600))
                session.add(
                    SleepRecord(
                        user_id=person.id,
                        clocked_in_at=start,
                        clocked_out_at=start + length,
                        duration_s=int(length.total_seconds()),
                        open_flag=None,
                    )
                )
        await session.commit()
    await database.dispose()
    return Tokens(settings.resolved_jwt_secret(), 24 * 3600).issue(reader.id).token


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--followings", type=int, default=150)
    parser.add_argument("--nights", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(asyncio.run(seed(args.followings, args.nights, args.seed)))


if __name__ == "__main__":
    main()
