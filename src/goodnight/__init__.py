"""Goodnight: a social sleep-tracking API."""

__version__ = "0.1.0"
