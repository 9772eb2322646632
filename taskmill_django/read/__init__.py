"""The read side: queries, snapshots, progress estimates, the dashboard's aggregates and
``explain``. Nothing here writes; every surface (the query API, the REST API, the admin and the
dashboard) reads through these modules, so they all show the same numbers.
"""
