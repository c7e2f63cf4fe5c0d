"""Where the parts log: a file of their own under `<data_dir>/logs/`, and the terminal at a level of its own.

`serve` keeps its terminal for the banner: its parts write everything to their files and only
warnings to the terminal, unless `--verbose`. A part run alone logs to the terminal as before.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from gunicorn.glogging import Logger as _GunicornLogger

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

# set by `setup`: what gunicorn's own logger copies to the terminal
_terminal_level = logging.INFO


def log_dir(data_dir: Path) -> Path:
    """The directory of the parts' log files."""
    return Path(data_dir) / "logs"


def setup(terminal_level: int = logging.INFO, log_file: Path | None = None) -> None:
    """Log INFO and up: to `log_file` when given, and to stderr from `terminal_level` up."""
    global _terminal_level
    _terminal_level = terminal_level
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(logging.INFO)
    formatter = logging.Formatter(FORMAT)
    terminal = logging.StreamHandler(sys.stderr)
    terminal.setLevel(terminal_level)
    terminal.setFormatter(formatter)
    root.addHandler(terminal)
    if log_file is not None:
        try:
            Path(log_file).parent.mkdir(parents=True, exist_ok=True)
            to_file = logging.FileHandler(log_file, encoding="utf-8")
        except OSError as e:
            logging.getLogger("streamforge").warning("cannot write the log file %s: %s", log_file, e)
            return
        to_file.setLevel(logging.INFO)
        to_file.setFormatter(formatter)
        root.addHandler(to_file)


class GunicornLogger(_GunicornLogger):
    """gunicorn's logger, writing its error log as configured and copying warnings up to the terminal."""

    def setup(self, cfg) -> None:
        """gunicorn's setup, plus a terminal handler when the error log goes to a file."""
        super().setup(cfg)
        if cfg.errorlog and cfg.errorlog != "-":
            terminal = logging.StreamHandler(sys.stderr)
            terminal.setLevel(_terminal_level)
            terminal.setFormatter(logging.Formatter(self.error_fmt, self.datefmt))
            self.error_log.addHandler(terminal)
