"""R²VPO tests. Helper modules (``r2vpo_mini_engine``) sit next to the tests; this folder is put
on ``sys.path`` explicitly because the suite runs in pytest's importlib mode (and the 2-rank test's
spawned processes import the helper by name)."""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
