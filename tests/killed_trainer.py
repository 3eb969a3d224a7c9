"""The trainer process, sent a signal right after it stored its first intermediate checkpoint.

`SIGKILL` (the default) is what a preempted GPU pod or an OOM kill does: no exception, no Pipes
report, no cleanup. `SIGTERM` (argument `TERM`) is what deleting a pod or stopping a run does.
"""

import os
import signal
import sys

from babylon_pipeline.training import trainer
from babylon_pipeline.training.__main__ import main

_save_checkpoint = trainer.save_checkpoint
SIGNAL = signal.Signals[f"SIG{sys.argv[1]}"] if len(sys.argv) > 1 else signal.SIGKILL


def _save_then_signal(*args, **kwargs):
    _save_checkpoint(*args, **kwargs)
    os.kill(os.getpid(), SIGNAL)


trainer.save_checkpoint = _save_then_signal

if __name__ == "__main__":
    main()
