"""Background work: the transactional outbox and the workers that drain it."""
