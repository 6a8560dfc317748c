"""Prometheus metrics: ``GET /metrics``, its instruments and their multiprocess mode."""
