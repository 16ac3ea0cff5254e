"""`python -m specc ...` (and `torchrun ... -m specc ...`) is the `specc` command."""
import sys

from specc.cli import main

sys.exit(main())
