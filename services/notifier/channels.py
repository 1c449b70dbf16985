"""The transports: SMTP email, an HTTP gateway for SMS and messengers, PDF letters in a folder and
signed webhooks. Each is idempotent at the receiving end by the command id: the Message-ID of an
email, the file name of a letter, the Idempotency-Key of an HTTP request. That is what makes a send
repeated after a crash mid-send happen once in effect.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import tempfile
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
import orjson

from services.notifier.rendering import Rendered
from services.runtime.settings import Settings


class TransientFailure(Exception):
    """Worth retrying later: the server is down, busy, or timed out."""


class PermanentFailure(Exception):
    """Retrying will not help: a refused address, a rejected request."""


def message_id(command_id: str, domain: str = "arrears") -> str:
    return f"<{command_id}@{domain}>"


class Email:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    async def send(self, command_id: str, to: str, rendered: Rendered) -> str:
        settings = self._settings
        message = EmailMessage()
        message["From"] = settings.mail_from
        message["To"] = to
        message["Subject"] = rendered.subject
        message["Message-ID"] = message_id(command_id)
        message["Content-Language"] = rendered.language
        message.set_content(rendered.body)
        try:
            await aiosmtplib.send(
                message,
                hostname=settings.smtp_host,
                port=settings.smtp_port,
                username=settings.smtp_username,
                password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
                start_tls=settings.smtp_starttls,
                timeout=30,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise PermanentFailure(f"recipient refused: {exc}") from exc
        except aiosmtplib.SMTPResponseException as exc:
            if 500 <= exc.code < 600:
                raise PermanentFailure(f"SMTP {exc.code}: {exc.message}") from exc
            raise TransientFailure(f"SMTP {exc.code}: {exc.message}") from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise TransientFailure(f"SMTP: {exc}") from exc
        return str(message["Message-ID"])


async def _post(client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str]) -> str:
    try:
        response = await client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        raise TransientFailure(f"{url}: {exc}") from exc
    if response.status_code == 429 or response.status_code >= 500:
        raise TransientFailure(f"{url}: HTTP {response.status_code}")
    if response.status_code >= 400:
        raise PermanentFailure(f"{url}: HTTP {response.status_code} {response.text[:500]}")
    return str(response.headers.get("x-request-id", response.status_code))


class Gateway:
    """SMS and messenger messages through an HTTP gateway: POST {channel, to, text, reference}."""

    def __init__(self, settings: Settings, client: httpx.AsyncClient) -> None:
        self._url = settings.sms_gateway_url
        self._client = client

    async def send(self, command_id: str, channel: str, to: str, rendered: Rendered) -> str:
        if not self._url:
            raise PermanentFailure("no SMS gateway configured (ARREARS_SMS_GATEWAY_URL)")
        body = orjson.dumps({"channel": channel, "to": to, "text": rendered.body, "reference": command_id})
        headers = {"content-type": "application/json", "idempotency-key": command_id}
        return await _post(self._client, self._url, body, headers)


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Webhooks:
    """Agency placement and recall, ERP credit-hold requests: JSON signed with HMAC-SHA256."""

    def __init__(self, settings: Settings, client: httpx.AsyncClient) -> None:
        self._urls = settings.webhook_urls
        self._secret = settings.webhook_secret.get_secret_value()
        self._client = client

    def url_for(self, target: str) -> str | None:
        return self._urls.get(target) or self._urls.get(target.split(":")[0])

    async def send(self, command_id: str, target: str, payload: dict[str, Any]) -> str:
        url = self.url_for(target)
        if url is None:
            raise PermanentFailure(f"no webhook configured for {target} (ARREARS_WEBHOOK_URLS)")
        body = orjson.dumps(payload)
        headers = {
            "content-type": "application/json",
            "idempotency-key": command_id,
            "x-arrears-signature": signature(self._secret, body),
        }
        return await _post(self._client, url, body, headers)


class LetterFolder:
    """Letters land as `<folder>/<tenant>/<command id>.pdf`, written atomically (same name, same file)."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    def write(self, tenant_id: str, command_id: str, pdf: bytes) -> Path:
        directory = self._folder / tenant_id
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / f"{command_id.replace('/', '_')}.pdf"
        descriptor, temporary = tempfile.mkstemp(dir=directory, suffix=".part")
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(pdf)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return target
