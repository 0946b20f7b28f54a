#!/usr/bin/env python
"""python train.py --stage {naive,localize,align,classify,match} [--help]: see rightwhale/stages."""
import sys

from rightwhale.stages import main

if __name__ == "__main__":
    sys.exit(main())
