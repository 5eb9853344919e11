"""Benchmarks: the end-to-end harness (``python -m bench``), stage benchmarks and the peers."""
