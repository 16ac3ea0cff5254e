"""`python -m specc ...` (and `torchrun ... -m specc train ...`) runs the command line."""
import sys

from specc.cli import main

sys.exit(main())
