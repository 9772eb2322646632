"""Benchmarks for taskmill_django (not tests): ``python3 dev.py bench``."""
