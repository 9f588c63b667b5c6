"""The MQTT topics of one device (DESIGN.md contract 4), all under ``<mqtt.topic_prefix>/<device_id>``.

==================== ===========================================================================
``status``           ``online`` (retained, QoS 1, published on every connect); ``offline`` as the
                     Last Will and at a clean shutdown
``<camera>/fall``    fall events, JSON, QoS 1, not retained
``<camera>/state``   ``ON`` published just before a ``fall_detected``/``long_lie``, ``OFF`` just after
                     a ``fall_cleared``; at each connect derived from the outbox (ON while a fall
                     waits there or was never cleared, even across restarts); retained, QoS 1
``<camera>/snapshot`` JPEG of the skeletons at a fall, retained (``mqtt.snapshot``)
``stats``            JSON with the daemon's figures, at most every ``mqtt.stats_interval_s``, QoS 0
``mqtt-test``        ``fallwatch mqtt-test``'s test event (never a camera's topic)
==================== ===========================================================================

Leaf module.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_TOPIC_LEVEL = re.compile(r"[^/#+\s]{1,64}")


def is_topic_level(name: str) -> bool:
    """Can ``name`` (a camera's name) be one level of a topic: 1-64 characters, no ``/``, ``#``, ``+`` or spaces."""
    return bool(_TOPIC_LEVEL.fullmatch(name))


@dataclass(frozen=True)
class Topics:
    """Every topic of one device; ``base`` is ``<topic_prefix>/<device_id>``."""

    base: str

    @classmethod
    def for_config(cls, config: Any) -> "Topics":
        return cls("%s/%s" % (config.mqtt.topic_prefix, config.device_id))

    @property
    def status(self) -> str:
        return self.base + "/status"

    @property
    def stats(self) -> str:
        return self.base + "/stats"

    @property
    def test(self) -> str:
        """Where ``fallwatch mqtt-test`` publishes its test event (never a camera's topic)."""
        return self.base + "/mqtt-test"

    def fall(self, camera: str) -> str:
        return "%s/%s/fall" % (self.base, camera)

    def state(self, camera: str) -> str:
        return "%s/%s/state" % (self.base, camera)

    def snapshot(self, camera: str) -> str:
        return "%s/%s/snapshot" % (self.base, camera)
