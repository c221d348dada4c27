"""``python -m distunlearn`` is the ``distunlearn`` command."""
import sys

from distunlearn.console import main

sys.exit(main())
