"""`python -m specc ...` (and `torchrun ... -m specc ...`) is the `specc` command."""
import os
import sys

from specc.cli import main

code = main()
if "RANK" in os.environ and "LOCAL_RANK" in os.environ:   # a torchrun worker
    # the command has closed its process group; skip the interpreter's teardown, where torch's gloo objects
    # sometimes abort a finished worker ("terminate called without an active exception", exit -6)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
sys.exit(code)
