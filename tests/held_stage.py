"""Runs a stage script held at a known point until a signal ends it, so a test that kills the
stage kills it there, never at a moment picked by the clock.

    python tests/held_stage.py WHERE N READY SCRIPT [ARGS...]

WHERE is `step` (hold after the Nth optimizer step) or `replace` (hold in the Nth os.replace,
before it renames: an output's temporary file is written in full, the output not yet). Once
held, the stage creates the file READY and waits for a signal: SIGINT and SIGTERM then raise
where it stands, as they would mid-run; SIGKILL ends it there.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import time
from pathlib import Path

import torch

where, n, ready, script, *args = sys.argv[1:]
calls = 0
# Python leaves SIGINT ignored when it starts ignored (a background job, nohup): the test's
# SIGINT must raise KeyboardInterrupt wherever the test runs
signal.signal(signal.SIGINT, signal.default_int_handler)


def hold() -> None:
    global calls
    calls += 1
    if calls == int(n):
        Path(ready).touch()
        # Python runs signal handlers in the main thread between bytecodes. signal.pause() would
        # miss a signal that lands just before it, or on one of torch's threads (the main thread
        # then sleeps on); a short sleep returns, and the pending handler runs, within 50 ms
        # wherever the signal landed. A handler that raises (SIGINT, SIGTERM) ends the wait.
        while True:
            time.sleep(0.05)


if where == "step":
    adam_step = torch.optim.Adam.step

    def step(self, *a, **kw):
        result = adam_step(self, *a, **kw)
        hold()
        return result

    torch.optim.Adam.step = step
elif where == "replace":
    replace = os.replace

    def held_replace(src, dst):
        hold()
        replace(src, dst)

    os.replace = held_replace
else:
    sys.exit(f"held_stage: WHERE must be step or replace, not {where!r}")

sys.argv = [script, *args]
runpy.run_path(script, run_name="__main__")
