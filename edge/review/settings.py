"""The ``review:`` section of the configuration (assembled in edge.config; read by edge.review).

Leaf module: imports nothing of fallwatch but edge.settings.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from edge.settings import Section, setting


@dataclass(frozen=True)
class ReviewConfig(Section):
    enabled: bool = setting(True, "keep a skeleton clip of every fall_detected under <state_dir>/review/events, for "
                            "`fallwatch review` and the review page (skeletons only, never video)")
    before_s: float = setting(10, "a clip starts this long before the event, seconds of frame time",
                              between=(0, 60))
    after_s: float = setting(10, "a clip ends this long after the event, seconds of frame time (written then)",
                             between=(0, 60))
    keep_days: float = setting(30, "event clips older than this are deleted, days", between=(1, 3650))
    max_events: int = setting(200, "at most this many event clips are kept; the oldest go first",
                              between=(1, 100000))
    site_dir: Optional[Path] = setting(None, "the site dataset that labelled clips are copied to (read by "
                                       "`fallwatch evaluate`); null = <state_dir>/site")
