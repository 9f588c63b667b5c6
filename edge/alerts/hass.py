"""Home Assistant MQTT discovery: what to announce so each camera appears as a binary_sensor.

One retained config per camera on
``<discovery_prefix>/binary_sensor/<device_id>/<camera>_fall/config``: device class ``safety``
(on = unsafe), state from the retained ``<camera>/state`` topic (``ON``/``OFF``), availability
from ``<device>/status`` (``online``/``offline``, the Last Will), and attributes taken from the
last fall event on ``<camera>/fall`` (a few fields, not the keypoints). All cameras of a device
share one Home Assistant device. Home Assistant publishes ``online`` on its birth topic when it
starts; the announcements are then sent again (:mod:`edge.alerts.publisher` does that).

A camera removed from the configuration leaves its retained config behind, and Home Assistant
would show its sensor forever. So the publisher subscribes to :func:`discovery_filter` (this
device's configs only) on every connect: the broker hands over what it retains there, and a config
of a camera the daemon does not have (:func:`announced_camera`) is cleared with an empty retained
payload, which makes Home Assistant remove the sensor. The broker, not a file on the device, is
asked because it holds exactly what Home Assistant reads: a record in the state directory would
be lost with that directory (a reinstall, a purge, a damaged SD card) and could disagree with the
broker (a broker reset, another copy of the config elsewhere).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

from edge import __version__
from edge.alerts.events import encode_event
from edge.alerts.topics import Topics

# Jinja template Home Assistant applies to each message on the fall topic to get the attributes.
ATTRIBUTES_TEMPLATE = ("{{ {'event_id': value_json.event_id, 'type': value_json.type, "
                       "'timestamp': value_json.timestamp, 'track_id': value_json.track_id, "
                       "'confidence': value_json.confidence} | tojson }}")


_SUFFIX = "_fall"


def discovery_topic(discovery_prefix: str, device_id: str, camera: str) -> str:
    return "%s/binary_sensor/%s/%s%s/config" % (discovery_prefix, device_id, camera, _SUFFIX)


def discovery_filter(discovery_prefix: str, device_id: str) -> str:
    """The subscription that sees every camera config this device may have announced."""
    return "%s/binary_sensor/%s/+/config" % (discovery_prefix, device_id)


def announced_camera(topic: str, discovery_prefix: str, device_id: str) -> Optional[str]:
    """The camera whose config ``topic`` is (:func:`discovery_topic`), or None for any other topic."""
    head = "%s/binary_sensor/%s/" % (discovery_prefix, device_id)
    if not (topic.startswith(head) and topic.endswith(_SUFFIX + "/config")):
        return None
    camera = topic[len(head):-len(_SUFFIX + "/config")]
    return camera if camera and "/" not in camera else None


def binary_sensor_config(device_id: str, camera: str, status_topic: str, state_topic: str,
                         fall_topic: str) -> Dict[str, object]:
    """The discovery payload (a JSON object) of one camera's fall sensor."""
    return {
        "name": "Fall %s" % camera,
        "unique_id": "fallwatch_%s_%s_fall" % (device_id, camera),
        "device_class": "safety",
        "state_topic": state_topic,
        "payload_on": "ON",
        "payload_off": "OFF",
        "availability_topic": status_topic,
        "payload_available": "online",
        "payload_not_available": "offline",
        "json_attributes_topic": fall_topic,
        "json_attributes_template": ATTRIBUTES_TEMPLATE,
        "qos": 1,
        "device": {
            "identifiers": ["fallwatch_%s" % device_id],
            "name": "fallwatch %s" % device_id,
            "manufacturer": "fallwatch",
            "model": "fallwatch edge",
            "sw_version": __version__,
        },
    }


def discovery_messages(discovery_prefix: str, device_id: str, cameras: Sequence[str], topics: Topics
                       ) -> List[Tuple[str, bytes]]:
    """(topic, payload) of every camera's announcement; publish them retained, QoS 1."""
    out = []
    for camera in cameras:
        config = binary_sensor_config(device_id, camera, topics.status, topics.state(camera), topics.fall(camera))
        out.append((discovery_topic(discovery_prefix, device_id, camera),
                    encode_event(config).encode("utf-8")))
    return out
