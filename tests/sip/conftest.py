"""The SIP tests import their helpers from sipsupport (beside this file)."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
