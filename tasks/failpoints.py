"""Failpoints: a test hook that SIGKILLs this process at a named moment.

``failpoint("promote:after-record")`` does nothing unless the environment variable
``BAYESPILOT_FAILPOINT`` names exactly that point; then the process kills itself with SIGKILL
(no cleanup handler, no ``finally``, no flush: what a power cut or the OOM killer leaves).
``tests/flows/test_crash_consistency.py`` uses it to kill a promotion or a rollback at every
stage boundary, inside the record write and around the alias moves. Not for production use;
the cost when unset is one environment lookup per call.

Names in use: ``after-stage:<stage>`` (flows/runner.py, after each flow stage),
``promote:after-register``, ``promote:after-record``, ``promote:between-aliases``,
``promote:after-alias``, ``record:temp-written`` (temp file written, before it is linked),
``record:linked`` (record linked, before the head marker), ``rollback:after-record``,
``rollback:between-aliases``, ``rollback:after-alias``, ``reconcile:between-aliases`` (the
next run moving a lagging alias), ``batch:partition-written:<n>`` (a dask worker, after
partition n of a batch run wrote its decisions).
"""

from __future__ import annotations

import os
import signal

FAILPOINT_ENV = "BAYESPILOT_FAILPOINT"


def failpoint(name: str) -> None:
    """SIGKILL the own process when ``BAYESPILOT_FAILPOINT`` equals ``name``."""
    if os.environ.get(FAILPOINT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
