"""A runnable demo site for taskmill_django: `python3 dev.py demo`."""
