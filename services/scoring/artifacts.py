"""A trained scorer on disk: `model.pkl` and beside it `manifest.json` with the model's version,
training window, features, metrics and the SHA-256 of the pickle.

A pickle runs code when it is loaded, so it is read only after its bytes hash to what the manifest
records; a file that does not match is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from services.scoring.features import FEATURE_NAMES
from services.scoring.model import Scorer

MODEL_FILE = "model.pkl"
MANIFEST_FILE = "manifest.json"


class ModelIntegrityError(ValueError):
    pass


@dataclass(frozen=True)
class Manifest:
    version: int
    kind: str
    trained_from: str | None
    trained_until: str
    examples: int
    features: list[str]
    metrics: dict[str, Any]
    sha256: str
    file: str = MODEL_FILE

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        return cls(**json.loads((directory / MANIFEST_FILE).read_text()))


def current_version(directory: Path) -> int | None:
    try:
        return Manifest.read(directory).version
    except FileNotFoundError:
        return None


def save(
    scorer: Scorer,
    directory: Path,
    *,
    trained_from: str | None,
    trained_until: str,
    examples: int,
    metrics: dict[str, Any],
) -> Manifest:
    """Write the scorer as the next version; the manifest is replaced last and atomically, so a reader
    sees the old pair or the new one."""
    directory.mkdir(parents=True, exist_ok=True)
    version = (current_version(directory) or 0) + 1
    payload = pickle.dumps(scorer, protocol=5)
    name = f"model-v{version}.pkl"
    (directory / name).write_bytes(payload)
    manifest = Manifest(
        version=version,
        kind=scorer.kind,
        trained_from=trained_from,
        trained_until=trained_until,
        examples=examples,
        features=list(FEATURE_NAMES),
        metrics=metrics,
        sha256=hashlib.sha256(payload).hexdigest(),
        file=name,
    )
    partial = directory / f".{MANIFEST_FILE}.tmp"
    partial.write_text(json.dumps(manifest.__dict__, indent=2, sort_keys=True) + "\n")
    os.replace(partial, directory / MANIFEST_FILE)
    return manifest


def load(directory: Path) -> tuple[Scorer, Manifest]:
    manifest = Manifest.read(directory)
    payload = (directory / manifest.file).read_bytes()
    digest = hashlib.sha256(payload).hexdigest()
    if digest != manifest.sha256:
        raise ModelIntegrityError(
            f"{directory / manifest.file}: SHA-256 {digest} is not the manifest's {manifest.sha256}"
        )
    if manifest.features != list(FEATURE_NAMES):
        raise ModelIntegrityError(f"{directory}: the model was trained on other features")
    return cast(Scorer, pickle.loads(payload)), manifest
