"""tests.settings with IO budgets on: a 1 MB/s disk-write capacity measured by a sampler whose
traffic the test sets (tests.testapp.io)."""

from tests.settings import *  # noqa: F403
from tests.settings import TASKMILL

TASKMILL = {
    **TASKMILL,
    "RESOURCE_MONITORING": True,
    "IO_SAMPLER": "tests.testapp.io.FileRate",
    "IO_CAPACITY": {"disk_write": 1_000_000},
}
