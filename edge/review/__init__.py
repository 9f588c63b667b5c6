"""Alert review: a skeleton clip of every fall, kept on the device, judged by a person and added to the
site's own dataset for ``fallwatch evaluate`` (issue 19).

* :class:`ReviewRecorder` — the daemon's sink that writes ``<state_dir>/review/events/<event_id>/``;
* :func:`list_events`, :func:`label_event` — the events kept, and a person's answer (``fall`` or
  ``adl``) copied into the site dataset (edge.review.store documents the layout);
* :func:`timeline_png` — the evaluate timeline of one event;
* ``fallwatch review list | label | plot`` — the same from the command line (edge.review.command).
"""
from __future__ import annotations

from edge.review.recorder import ReviewRecorder
from edge.review.settings import ReviewConfig
from edge.review.store import (LABELS, ReviewError, event_folder, events_dir, label_event, list_events, read_event,
                               site_dir_of)
from edge.review.timeline import timeline_png

__all__ = ["LABELS", "ReviewConfig", "ReviewError", "ReviewRecorder", "event_folder", "events_dir", "label_event",
           "list_events", "read_event", "site_dir_of", "timeline_png"]
