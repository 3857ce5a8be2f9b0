"""What an operator sees of a running Goodnight: Prometheus metrics (and, beside them, logs and traces)."""
