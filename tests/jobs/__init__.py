"""Background work: the outbox and the commands operators run on it."""
