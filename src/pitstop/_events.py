"""Observer events: checkpoint.save / load / resume / prune / error."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ._types import CheckpointInfo

logger = logging.getLogger("pitstop")

SAVE = "checkpoint.save"
LOAD = "checkpoint.load"
RESUME = "checkpoint.resume"
PRUNE = "checkpoint.prune"
ERROR = "checkpoint.error"


@dataclass(frozen=True, slots=True)
class CheckpointEvent:
    """What happened, to whom, and how long it took."""

    name: str
    run_id: str
    seq: int | None = None
    trigger: str | None = None
    duration_s: float | None = None
    info: CheckpointInfo | None = None
    removed: tuple[int, ...] = ()
    error: BaseException | None = None


Observer = Callable[[CheckpointEvent], None]


def emit(observers: Sequence[Observer], event: CheckpointEvent) -> None:
    """Log the event and hand it to each observer.

    An observer that raises is logged and skipped: diagnostics must never
    break a save or a resume.
    """
    if event.error is not None:
        logger.error(
            "%s run=%s trigger=%s: %s", event.name, event.run_id, event.trigger, event.error
        )
    else:
        logger.info(
            "%s run=%s seq=%s trigger=%s", event.name, event.run_id, event.seq, event.trigger
        )
    for observer in observers:
        try:
            observer(event)
        except Exception:
            logger.exception("pitstop observer %r failed on %s", observer, event.name)
