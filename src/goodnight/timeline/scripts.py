"""The Lua scripts of the Redis timelines, and their registration on a client.

Each runs atomically and touches one reader's keys only (they share a hash tag, hence a Cluster slot), or
one key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from goodnight.redis_client import RedisClient

# One call of a script: its keys, then its arguments.
Call = tuple[list[Any], list[Any]]
CLUSTER_CONCURRENCY = 64

# KEYS[1] = marker, KEYS[2] = the key that must still exist; one reader's keys share a slot (Cluster-safe).
# ARGV: seen, ttl, and the first follow version of a new marker ('' to leave the version alone).
MARK_IF_EXISTS = """
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'seen', ARGV[1])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'follows', ARGV[3]) end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""

# Fanout and rebuilds: add entries unless the reader's follow state says the author is unfollowed.
# KEYS[1] = follow state, KEYS[2..] = buckets; ARGV[1..#KEYS-1] = each bucket's EXPIREAT, then
# (author, bucket number, member) triples.
ADD_ENTRIES = """
local buckets = #KEYS - 1
local blocked = {}
for i = buckets + 1, #ARGV, 3 do
  local author = ARGV[i]
  if blocked[author] == nil then
    local code = redis.call('HGET', KEYS[1], author)
    blocked[author] = code ~= false and tonumber(code) % 2 == 0
  end
  if not blocked[author] then
    redis.call('ZADD', KEYS[tonumber(ARGV[i + 1]) + 1], 0, ARGV[i + 2])
  end
end
for b = 1, buckets do redis.call('EXPIREAT', KEYS[b + 1], ARGV[b]) end
return 0
"""

# A follow or unfollow, unless a newer change of the same pair was applied already: record it, then add or
# remove the followee's entries, and move the marker's follow version if the state changed.
# KEYS[1] = follow state, KEYS[2] = marker, KEYS[3..] = buckets; ARGV[1] = followee, ARGV[2] = follow code,
# ARGV[3] = follow state TTL, ARGV[4..] = each bucket's EXPIREAT, then (bucket number, member) pairs.
SET_FOLLOW_STATE = """
local code = tonumber(ARGV[2])
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current and tonumber(current) > code then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
local buckets = #KEYS - 2
local following = code % 2 == 1
for i = buckets + 4, #ARGV, 2 do
  local key = KEYS[tonumber(ARGV[i]) + 2]
  if following then redis.call('ZADD', key, 0, ARGV[i + 1]) else redis.call('ZREM', key, ARGV[i + 1]) end
end
if following then
  for b = 1, buckets do redis.call('EXPIREAT', KEYS[b + 2], ARGV[b + 3]) end
end
if (not current or tonumber(current) ~= code) and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HINCRBY', KEYS[2], 'follows', 1)
end
return 1
"""

# An author renamed: replace a record's rendering, unless it is a deleted record's tombstone (an empty
# string). A missing one is written too, so that a fanout or rebuild that read the old name and stores its
# rendering later (SET NX) finds the key taken. KEYS[1] = the rendering; ARGV[1] = the new rendering,
# ARGV[2] = its EXPIREAT.
RERENDER = """
if redis.call('GET', KEYS[1]) == '' then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EXAT', ARGV[2])
return 1
"""


class Scripts:
    """The scripts above, registered on one client, and a way to run many calls of one in a round trip."""

    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self.mark_if_exists = redis.register_script(MARK_IF_EXISTS)
        self.add_entries = redis.register_script(ADD_ENTRIES)
        self.set_follow_state = redis.register_script(SET_FOLLOW_STATE)
        self.rerender = redis.register_script(RERENDER)

    async def run_many(self, script: AsyncScript, calls: Sequence[Call]) -> None:
        """Many calls of one script in one round trip; after a restart emptied Redis's script cache, load
        the script and run them all again (every script here is idempotent)."""
        if isinstance(self.redis, RedisCluster):
            # redis-py's Cluster pipelines refuse scripts: concurrent calls, each routed to its node.
            for at in range(0, len(calls), CLUSTER_CONCURRENCY):
                chunk = calls[at : at + CLUSTER_CONCURRENCY]
                await asyncio.gather(*(script(keys=ks, args=args) for ks, args in chunk))
            return
        for _ in range(2):
            pipe = self.redis.pipeline(transaction=False)
            for call_keys, call_args in calls:
                pipe.evalsha(script.sha, len(call_keys), *call_keys, *call_args)
            results = await pipe.execute(raise_on_error=False)
            if not any(isinstance(result, NoScriptError) for result in results):
                for result in results:
                    if isinstance(result, Exception):
                        raise result
                return
            await self.redis.script_load(script.script)
        raise NoScriptError("the script cache keeps losing the timeline scripts")
