"""``python -m distunlearn`` is the ``distunlearn`` command."""
import sys

from distunlearn.cli import main

sys.exit(main())
