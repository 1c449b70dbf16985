"""The scorer a running service uses: the newest version in the model directory, looked at again on
every batch (one small file read), so a model trained meanwhile is used without a restart."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

from services.scoring import artifacts
from services.scoring.model import Scorer, default_scorecard

log = logging.getLogger(__name__)


class ModelSource:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.scorer: Scorer = default_scorecard()
        self.version: int | None = None

    def current(self) -> tuple[Scorer, int | None]:
        """The newest scorer whose file matches its manifest; the one in use if the newest does not
        (a version being written, or a file that fails its hash: said in the log)."""
        try:
            latest = artifacts.current_version(self.directory)
        except (OSError, ValueError, TypeError) as exc:
            log.warning("scoring model manifest in %s unreadable: %s", self.directory, exc)
            return self.scorer, self.version
        if latest is not None and latest != self.version:
            try:
                self.scorer, manifest = artifacts.load(self.directory)
            except (OSError, ValueError, TypeError, pickle.UnpicklingError) as exc:
                log.error("scoring model version %s refused: %s", latest, exc)
            else:
                self.version = manifest.version
                log.info("scoring model version %s (%s) in use", manifest.version, manifest.kind)
        return self.scorer, self.version
