"""``fallwatch review list | label | plot``: alert review from the command line (the page's twin).

:func:`add_commands` is called by edge.cli with its subcommand helper; the commands read the
configuration for ``paths.state_dir`` and ``review.site_dir``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from edge.commands import load_config_for

ANSWERS = {"fall": "fall", "real-fall": "fall", "false-alarm": "adl", "adl": "adl"}
EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def cmd_list(args: argparse.Namespace) -> int:
    from edge.review.store import events_dir, list_events

    config = load_config_for(args)
    events = list_events(Path(config.paths.state_dir))
    if args.json:
        print(json.dumps([dict(e, clip=str(e["clip"]), snapshot=None if e["snapshot"] is None else str(e["snapshot"]))
                          for e in events], indent=1))
        return EXIT_OK
    if not events:
        print("no events under %s" % events_dir(Path(config.paths.state_dir)))
        return EXIT_OK
    print("%-36s  %-24s  %-12s  %5s  %-12s  %s" % ("EVENT_ID", "TIME (UTC)", "CAMERA", "TRACK", "LABEL", "CLIP"))
    for e in events:
        label = {"fall": "real fall", "adl": "false alarm"}.get(e["label"], "-")
        print("%-36s  %-24s  %-12s  %5s  %-12s  %s%s" % (e["id"], e["time"], e["camera"], e["track_id"], label,
                                                          e["clip"], "" if e["complete"] else " (cut short)"))
    return EXIT_OK


def cmd_label(args: argparse.Namespace) -> int:
    from edge.review.store import ReviewError, label_event, site_dir_of

    config = load_config_for(args)
    site = Path(args.site) if args.site else site_dir_of(config)
    try:
        clip = label_event(Path(config.paths.state_dir), site, args.event_id, ANSWERS[args.answer])
    except ReviewError as exc:
        print("fallwatch: %s" % exc, file=sys.stderr)
        return EXIT_FAIL
    print("%s: %s -> %s (row in %s); `fallwatch evaluate %s` replays the site's clips"
          % (args.event_id, args.answer, clip, site / "labels.csv", site))
    return EXIT_OK


def cmd_plot(args: argparse.Namespace) -> int:
    from edge.errors import FallwatchError
    from edge.media import check_output_file
    from edge.review.timeline import timeline_png

    config = load_config_for(args)
    try:
        check_output_file(args.out, "the plot")
        out = timeline_png(Path(config.paths.state_dir), args.event_id, Path(args.out), config)
    except FallwatchError as exc:
        print("fallwatch: %s" % exc, file=sys.stderr)
        return EXIT_FAIL
    print(out)
    return EXIT_OK


def add_commands(sub: Any, nested: Any) -> None:
    """Add ``review`` and its actions to ``sub`` (edge.cli's subcommand helper); ``nested`` wraps a
    subparsers action the same way."""
    review = sub.add_parser(
        "review", help="the falls the daemon kept: list them, label them real fall / false alarm, plot one",
        description="For every fall_detected, `fallwatch run` keeps the skeletons (never video) from "
                    "review.before_s before to review.after_s after the event under "
                    "<paths.state_dir>/review/events/<EVENT_ID>/ (review.keep_days, review.max_events). Label "
                    "each as a real fall or a false alarm: the clip and its row go into the site dataset "
                    "(review.site_dir, default <paths.state_dir>/site), which `fallwatch evaluate SITE` reads, so "
                    "a threshold change can be tried on this room's own history.")
    actions = nested(review.add_subparsers(dest="review_command", metavar="ACTION"))
    p = actions.add_parser("list", help="the events kept, newest first, with their label",
                           description="One line per event kept: id, time (UTC), camera, track, label (real fall, "
                                       "false alarm or -) and the clip's path.")
    p.add_argument("--json", action="store_true", help="print the events as a JSON list instead of a table")
    p.set_defaults(func=cmd_list)
    p = actions.add_parser(
        "label", help="label an event real fall or false alarm, adding its clip to the site dataset",
        description="Copies the event's skeleton clip to SITE/clips/ and writes its row into SITE/labels.csv "
                    "(columns file, label, fall_start_s, event_id, camera, timestamp; label fall or adl). "
                    "A real fall's fall_start_s is estimated from the event: its time minus how long the person "
                    "had been down minus how long the descent took. Labelling an event again replaces its row.",
        epilog="Exit status: 0 labelled, 1 unknown event or the site folder cannot be written, 2 bad usage.")
    p.add_argument("event_id", metavar="EVENT_ID", help="an id from `fallwatch review list`")
    p.add_argument("answer", choices=sorted(ANSWERS), metavar="fall|false-alarm",
                   help="fall (also real-fall): the person fell; false-alarm (also adl): they did not")
    p.add_argument("--site", metavar="DIR", help="the site dataset folder (default: review.site_dir, else "
                                                 "<paths.state_dir>/site)")
    p.set_defaults(func=cmd_label)
    p = actions.add_parser(
        "plot", help="draw the timeline of one event (as `fallwatch evaluate --plots` does)",
        description="Replays the event's clip with the configuration's tracker and fall thresholds and draws per "
                    "track the parts seen, head and hip height, torso angle, descent speed and the detector's "
                    "state, with the thresholds and the alerts, into OUT.png (needs matplotlib: "
                    "pip install 'fallwatch[plots]').")
    p.add_argument("event_id", metavar="EVENT_ID", help="an id from `fallwatch review list`")
    p.add_argument("out", metavar="OUT.png", help="the PNG to write")
    p.set_defaults(func=cmd_plot)
