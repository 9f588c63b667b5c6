"""What every command line of the project shares (``fallwatch``, ``fallwatch-calibrate``): finding
and loading the configuration a command names, and logging to stderr."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Dict

# OpenCV's and FFmpeg's own log lines ("[ WARN:0@0.1] ... imread_(...)", "moov atom not found") go
# straight to stderr, before the one clean line fallwatch prints for the same problem. Below debug,
# only their fatal messages pass: OPENCV_LOG_LEVEL is read when cv2 loads (cv2.utils.logging when it
# is already loaded), OPENCV_FFMPEG_LOGLEVEL (0 = FFmpeg's AV_LOG_PANIC) when OpenCV first opens a
# file with FFmpeg. A value the user set is left alone.
NATIVE_QUIET: Dict[str, str] = {"OPENCV_LOG_LEVEL": "FATAL", "OPENCV_FFMPEG_LOGLEVEL": "0"}
_quieted: Dict[str, str] = {}


def setup_logging(level: str) -> None:
    """Log to stderr at ``level`` (debug, info, warning, error); below debug, OpenCV and FFmpeg keep quiet."""
    logging.basicConfig(stream=sys.stderr, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    logging.getLogger().setLevel(getattr(logging, level.upper(), logging.INFO))
    quiet_native_logs(level.lower() != "debug")


def quiet_native_logs(quiet: bool) -> None:
    """Silence OpenCV's and FFmpeg's own messages (``quiet``), or undo what an earlier call did."""
    had = "OPENCV_LOG_LEVEL" in _quieted
    for key, value in NATIVE_QUIET.items():
        if quiet and key not in os.environ:
            os.environ[key] = _quieted[key] = value
        elif not quiet and key in _quieted and os.environ.get(key) == _quieted.pop(key):
            del os.environ[key]
    ours = "OPENCV_LOG_LEVEL" in _quieted if quiet else had  # a level the user set is theirs
    cv2 = sys.modules.get("cv2")
    if cv2 is None or not ours:
        return
    # cv2 is already loaded, so its environment variable was read: set the level directly.
    # OpenCV 5 has cv2.utils.logging; OpenCV 4.x has cv2.setLogLevel (1 = fatal, 3 = warning).
    levels = getattr(getattr(cv2, "utils", None), "logging", None)
    if levels is not None:
        levels.setLogLevel(levels.LOG_LEVEL_FATAL if quiet else levels.LOG_LEVEL_WARNING)
    elif hasattr(cv2, "setLogLevel"):
        cv2.setLogLevel(1 if quiet else 3)


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
