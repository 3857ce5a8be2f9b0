"""The load harness behind ``bench/run.py``: datasets, services, load generators and the report."""
