"""``goodnight seed``: a deterministic, realistic dataset for load tests, loaded in bulk.

- ``graph``: the Zipf follow graph, regenerated block by block from seeded generators;
- ``users`` and ``records``: user rows (one shared password hash) and nightly sleep records;
- ``load``: PostgreSQL ``COPY`` / ``executemany`` in big batches, secondary indexes rebuilt afterwards;
- ``timelines``: the Redis timelines of active users, built in bulk;
- ``run``: the phases, progress bars and the summary.
"""

from goodnight.seed.run import SeedOptions, SeedRefused, run_seed, write_summary

__all__ = ["SeedOptions", "SeedRefused", "run_seed", "write_summary"]
