"""`python -m attrpatch.course release|grade` (the same as `attrpatch course ...`)."""
import sys

from .commands import main

sys.exit(main())
