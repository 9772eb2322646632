"""The dashboard's aggregates at their first import path (``from taskmill_django import
dashboard``); the code lives on the read side, in ``taskmill_django.read.dashboard``."""

from .read.dashboard import *  # noqa: F403
