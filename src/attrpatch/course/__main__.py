"""`python -m attrpatch.course release|grade` (the same as `attrpatch course ...`)."""
import sys

from .commands import main

if __name__ == "__main__":
    sys.exit(main())
