#!/usr/bin/env python
"""Sovereign's command line: `python manage.py run` starts the whole product."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sovereign.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as error:
        # A bad setting: one clear line naming the variable, not a traceback.
        sys.stderr.write(f"Sovereign cannot start: {error}\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
