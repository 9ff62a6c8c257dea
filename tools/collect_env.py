#!/usr/bin/env python
"""Print the environment report (same as ``python -m segalias_d2.collect_env``)."""

from segalias_d2.collect_env import main

if __name__ == "__main__":
    main()
