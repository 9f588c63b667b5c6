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
    """The configuration a command names (``args.config``, else ``$FALLWATCH_CONFIG``, else the
    default places: edge.config.find_config), loaded or exit status 2 with one line; logging set to
    ``args.log_level`` or the config's level. With no file named and none found, the built-in
    defaults, and a warning that says where it looked. Shared by every CLI."""
    from edge.config import find_config, load_config_or_exit, search_places

    path = find_config(args.config)
    config = load_config_or_exit(path)
    setup_logging(args.log_level or config.log_level)
    if path is None:
        logging.getLogger("fallwatch").warning(
            "no configuration file (no --config, FALLWATCH_CONFIG unset, none at %s): using the built-in "
            "defaults, MQTT %s, cameras %s", search_places(), "on" if config.mqtt.enabled else "off",
            ", ".join(c.uri for c in config.cameras) or "none")
    return config
