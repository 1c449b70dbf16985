"""The ways Arrears can reach a debtor or a partner."""

from __future__ import annotations

from typing import Literal

Channel = Literal["email", "sms", "messenger", "letter", "call", "webhook"]
CHANNELS: tuple[Channel, ...] = ("email", "sms", "messenger", "letter", "call", "webhook")
