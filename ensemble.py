#!/usr/bin/env python
"""python ensemble.py [--runs RUN ...]: stack classifier features (see rightwhale/cli/ensemble.py)."""
import sys

from rightwhale.cli.ensemble import main

if __name__ == "__main__":
    sys.exit(main())
