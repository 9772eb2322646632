"""``scheduler.explain()``'s ``Reason`` and reason codes, at the import path the docs have always
given; the code lives on the read side, in ``taskmill_django.read.explain``."""

from .read.explain import *  # noqa: F403
