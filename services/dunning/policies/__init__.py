"""Dunning policies shipped with Arrears; `default.yaml` is the ladder of DESIGN.md section 2."""

from __future__ import annotations

from pathlib import Path

from contracts.policy import DunningPolicy, load_policy

DEFAULT = Path(__file__).resolve().parent / "default.yaml"


def default_policy() -> DunningPolicy:
    return load_policy(DEFAULT)
