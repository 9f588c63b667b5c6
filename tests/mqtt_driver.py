"""A stand-in for the daemon: feeds a deterministic stream of fall events through the real MqttSink.

    python tests/mqtt_driver.py --config FILE --start N --count M --rate HZ

Event ``i`` (``drv-000123``) belongs to camera ``i % len(cameras)`` of the config and cycles
fall_detected -> long_lie -> fall_cleared per camera; its fields are shaped as DESIGN.md contract 4
(ISO timestamp, normalised bbox and 18 keypoints of a person lying down). After each ``emit()``
returns the driver prints ``emitted <event_id>`` (flushed): from that moment the event is durable,
so a test may SIGKILL this process at any time and require every printed id to arrive. After the
last event it closes the sink (drain, ``offline``) and prints ``closed``.

tests/test_mqtt_durability.py runs this for its many-event cases (hundreds of events in seconds,
several protocols) beside its test of the real ``fallwatch run`` on fall videos, which gives a
few dozen events a minute: the checks need only the stream of emitted event ids, whatever
produces it.
"""
from __future__ import annotations

import argparse
import datetime
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.config import load_config  # noqa: E402
from edge.alerts.publisher import MqttSink  # noqa: E402

TYPES = ("fall_detected", "long_lie", "fall_cleared")


def event_id(i: int) -> str:
    return "drv-%06d" % i


def make_event(i: int, device: str, cameras: List[str]) -> Dict[str, Any]:
    """Event number ``i`` of the stream; the same ``i`` always gives the same event."""
    camera = cameras[i % len(cameras)]
    k = i // len(cameras)
    x0, y0 = 0.2 + 0.01 * (k % 20), 0.6
    keypoints = [[round(x0 + 0.03 * j, 4), round(y0 + 0.02 * math.sin(j), 4), 0.8] for j in range(18)]
    t = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(seconds=0.5 * i)
    return {
        "event_id": event_id(i),
        "type": TYPES[k % 3],
        "device": device,
        "camera": camera,
        "track_id": 1 + k // 3,
        "timestamp": t.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "confidence": round(0.7 + 0.01 * (k % 30), 3),
        "bbox": [round(x0, 4), 0.55, round(x0 + 0.55, 4), 0.7],
        "keypoints": keypoints,
    }


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--start", type=int, default=0, help="index of the first event")
    parser.add_argument("--count", type=int, required=True, help="how many events")
    parser.add_argument("--rate", type=float, default=20.0, help="events per second")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    config = load_config(args.config)
    cameras = [c.name for c in config.cameras]
    sink = MqttSink(config).start()
    period = 1.0 / args.rate
    t0 = time.monotonic()
    for n, i in enumerate(range(args.start, args.start + args.count)):
        delay = t0 + n * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sink.emit(make_event(i, config.device_id, cameras))
        print("emitted %s" % event_id(i), flush=True)
    sink.close()
    print("closed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
