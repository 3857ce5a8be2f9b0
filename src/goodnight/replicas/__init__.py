"""Read replicas: which database a read goes to, so that users always see their own writes.

The rule: a read that tolerates a moment's staleness goes to a healthy replica (round robin), unless the
reader wrote something the replica has not replayed yet — then it goes to the primary. Writes, logins, and
every read inside a write stay on the primary. Other people see a write once the replicas replay it (within
``GOODNIGHT_REPLICA_MAX_LAG_SECONDS``, or the replica is not used).
"""
