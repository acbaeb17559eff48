"""Logging: a rotated file in the data directory, and the console in the foreground."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(cfg, data_dir: Path, foreground: bool) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    fh = logging.handlers.RotatingFileHandler(data_dir / cfg.log.file, maxBytes=cfg.log.max_bytes,
                                              backupCount=cfg.log.backups)
    fh.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(fh)
    if foreground:
        ch = logging.StreamHandler(sys.stderr)
        ch.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(ch)
    set_level(cfg.log.level)


def set_level(level: str) -> None:
    logging.getLogger().setLevel(level.upper())
