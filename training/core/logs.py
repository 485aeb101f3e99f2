"""Logging of the stage commands."""

from __future__ import annotations

import logging


def setup_logging() -> None:
    """Log INFO and above to stderr as ``time level logger: message``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
