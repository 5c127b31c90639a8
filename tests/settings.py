"""Sovereign's settings with a throwaway data directory, so tests never touch a real node's."""

import atexit
import os
import shutil
import tempfile

_data_dir = tempfile.mkdtemp(prefix="sovereign-tests-")
atexit.register(shutil.rmtree, _data_dir, ignore_errors=True)
os.environ["SOVEREIGN_DATA_DIR"] = _data_dir

from sovereign.settings import *  # noqa: E402, F403

# A file, as on a real node: an in-memory SQLite shares a cache whose table locks fail at once
# instead of waiting, which is not how concurrent writers behave on the node.
DATABASES["default"]["TEST"] = {"NAME": os.path.join(_data_dir, "tests.sqlite3")}  # noqa: F405
