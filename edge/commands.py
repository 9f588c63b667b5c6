"""What every command line of the project shares (``fallwatch``, ``fallwatch-calibrate``): finding
and loading the configuration a command names, and logging to stderr."""
from __future__ import annotations

import argparse
import logging
import sys


def setup_logging(level: str) -> None:
    logging.basicConfig(stream=sys.stderr, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    logging.getLogger().setLevel(getattr(logging, level.upper(), logging.INFO))


def load_config_for(args: argparse.Namespace):
    """The configuration a command names (``args.config``, else the default places), loaded or
    exit status 2; logging set to ``args.log_level`` or the config's level. Shared by every CLI."""
    from edge.config import default_config_path, load_config_or_exit

    path = args.config
    if path is None:
        found = default_config_path()
        path = found if found.is_file() else None
    config = load_config_or_exit(path)
    setup_logging(args.log_level or config.log_level)
    return config
