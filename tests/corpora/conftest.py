"""Makes the fixture-tree generators importable as ``corpora_fixtures`` (a unique name, so
that no other test directory's helper module can shadow it)."""

import importlib.util
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "corpora_fixtures", Path(__file__).with_name("fixtures.py")
)
_mod = importlib.util.module_from_spec(_spec)
sys.modules["corpora_fixtures"] = _mod
_spec.loader.exec_module(_mod)
