"""The trainer process, killed by SIGKILL right after it stored its first intermediate checkpoint.

What a preempted GPU pod or an OOM kill does: no exception, no Pipes report, no cleanup.
"""

import os
import signal

from babylon_pipeline.training import trainer
from babylon_pipeline.training.__main__ import main

_save_checkpoint = trainer.save_checkpoint


def _save_then_die(*args, **kwargs):
    _save_checkpoint(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)


trainer.save_checkpoint = _save_then_die

if __name__ == "__main__":
    main()
