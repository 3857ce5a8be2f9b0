"""Precomputed followings timelines in Redis (fanout on write, celebrities merged on read)."""
