"""The files packaging tests read, and the settings names Sovereign reads."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Exactly what goes into sovereign/ in the umbrel-apps repository.
UMBREL_DIR = ROOT / "umbrel"
# Sovereign's settings whose names are the usual ones, without the SOVEREIGN_ prefix.
OTHER_SETTINGS = {"REDIS_URL", "DATABASE_URL"}


def settings_reads() -> set[str]:
    """Every environment variable sovereign/settings.py reads, found by its env helpers."""
    source = (ROOT / "sovereign" / "settings.py").read_text()
    return set(re.findall(r'(?:env_\w+|secret_key)\(\s*"([A-Z_]+)"', source))
