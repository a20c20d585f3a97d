"""Wall time per stage, for the summary, the log and the CLI's progress line."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from autoseg.atomic import raise_if_signalled

log = logging.getLogger("autoseg.pipeline")


class Timer:
    """Wall time per stage, for the summary."""

    def __init__(self, on_stage: Callable[[str], None] | None = None) -> None:
        self.seconds: dict[str, float] = {}
        self.on_stage = on_stage

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the stage ``name`` (logged when it starts and ends).

        A signal whose exception was swallowed (see ``atomic.note_signal``) stops the run
        here, between stages, with nothing written.
        """
        raise_if_signalled(f"before the {name} stage")
        started = time.perf_counter()
        log.info("stage %s started", name)
        if self.on_stage is not None:
            self.on_stage(name)
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - started, 4)
            log.info("stage %s took %.2fs", name, self.seconds[name])
