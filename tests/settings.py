"""Sovereign's settings with a throwaway data directory, so tests never touch a real node's."""

import atexit
import os
import shutil
import tempfile

_data_dir = tempfile.mkdtemp(prefix="sovereign-tests-")
atexit.register(shutil.rmtree, _data_dir, ignore_errors=True)
os.environ["SOVEREIGN_DATA_DIR"] = _data_dir

from sovereign.settings import *  # noqa: E402, F403
