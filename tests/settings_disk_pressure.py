"""tests.settings with the built-in disk pressure source alone: disk writes measured by a sampler
whose traffic the test sets (tests.testapp.io), against a 1 MB/s capacity. Without
RESOURCE_MONITORING, so the machine's real CPU and memory load play no part."""

from tests.settings import *  # noqa: F403
from tests.settings import TASKMILL

TASKMILL = {
    **TASKMILL,
    "PRESSURE_SOURCES": ["taskmill_django.policy.pressure.DiskPressure"],
    "IO_SAMPLER": "tests.testapp.io.FileRate",
    "IO_CAPACITY": {"disk_write": 1_000_000},
}
