"""Instasent Transactional API client (SPEC §9). One pooled `httpx.AsyncClient`, injected."""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

__all__ = ["Accepted", "Account", "InstasentClient", "ProviderError", "Refused", "SmsItem"]

MAX_BULK = 100


class ProviderError(Exception):
    """Instasent refused or failed a request. `status` 0 means it could not be reached."""

    def __init__(self, status: int, message: str, retry_after: float | None = None, body: Any = None) -> None:
        super().__init__(f"Instasent {status or 'unreachable'}: {message}")
        self.status = status
        self.message = message
        self.retry_after = retry_after
        self.body = body

    @property
    def retryable(self) -> bool:
        """Only rate limits, server errors and network failures are worth retrying."""
        return self.status == 0 or self.status == 429 or self.status >= 500


@dataclass(frozen=True, slots=True)
class Account:
    """What `GET /organization/account/` says."""

    balance: float


@dataclass(frozen=True, slots=True)
class SmsItem:
    """One SMS to create; `client_id` is our message id (≤ 40 chars, unique per SMS)."""

    client_id: str
    sender: str
    to: str
    text: str
    allow_unicode: bool

    def body(self) -> dict[str, Any]:
        """The JSON object Instasent takes."""
        return {
            "from": self.sender,
            "to": self.to,
            "text": self.text,
            "clientId": self.client_id,
            "allowUnicode": self.allow_unicode,
        }


@dataclass(frozen=True, slots=True)
class Accepted:
    """An SMS Instasent holds: created now, or `duplicate`: created by an earlier attempt with this
    clientId (whose answer was lost), maybe to another number than this attempt's."""

    client_id: str
    provider_id: str
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class Refused:
    """A bulk item Instasent refused, with its message."""

    client_id: str
    message: str


def _json(response: httpx.Response) -> Any:
    try:
        return orjson.loads(response.content)  # a bulk answer of 100 entities: 5× faster than json
    except ValueError:
        return None


def _message(response: httpx.Response, body: Any) -> str:
    if isinstance(body, dict):
        return str(body.get("message") or body.get("error") or body)[:500]
    return (response.text[:200] or response.reason_phrase) if body is None else str(body)[:500]


def _duplicate_of(error: Any) -> str | None:
    """Instasent's id of the SMS that already carries this clientId: it was sent before, not now."""
    if isinstance(error, dict) and error.get("code") == "duplicate_client_id":
        return str(error.get("id") or "")
    return None


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait: X-RateLimit-Reset (epoch seconds or a delta) or Retry-After."""
    reset = response.headers.get("X-RateLimit-Reset")
    if reset:
        try:
            value = float(reset)
        except ValueError:
            value = -1.0
        if value > 1e9:  # an epoch timestamp
            return max(0.0, value - time.time())
        if value >= 0:
            return value
    retry = response.headers.get("Retry-After")
    if retry:
        try:
            return max(0.0, float(retry))
        except ValueError:
            parsed = email.utils.parsedate_to_datetime(retry)
            return max(0.0, parsed.timestamp() - time.time())
    return None


def _find_number(body: Any) -> float | None:
    if isinstance(body, int | float) and not isinstance(body, bool):
        return float(body)
    if isinstance(body, dict):
        for key in ("available", "balance", "credit", "amount"):
            if key in body and (n := _find_number(body[key])) is not None:
                return n
        for key in ("entity", "account", "data"):
            if key in body and (n := _find_number(body[key])) is not None:
                return n
    return None


def _headers(token: str, has_body: bool) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    if has_body:
        headers["Content-Type"] = "application/json"
    return headers


class InstasentClient:
    """The calls the service makes. Raises ProviderError for any non-2xx answer or network failure."""

    def __init__(self, http: httpx.AsyncClient, base_url: str) -> None:
        self._http = http
        self._base = base_url.rstrip("/")

    async def _request(self, method: str, path: str, token: str, body: Any = None) -> Any:
        try:
            response = await self._http.request(
                method,
                f"{self._base}{path}",
                content=None if body is None else orjson.dumps(body),
                headers=_headers(token, body is not None),
            )
        except httpx.TimeoutException:
            raise ProviderError(0, "timed out") from None
        except httpx.TransportError as e:
            raise ProviderError(0, f"network error: {type(e).__name__}") from None
        body = _json(response)
        if response.status_code >= 300:
            raise ProviderError(response.status_code, _message(response, body), _retry_after(response), body)
        if body is None:
            raise ProviderError(502, "Instasent answered with a body that is not JSON")
        return body

    async def account(self, token: str) -> Account:
        """The account and its balance; checks the token."""
        body = await self._request("GET", "/organization/account/", token)
        return Account(balance=_find_number(body) or 0.0)

    async def sent_to(self, token: str, provider_id: str) -> str:
        """`GET /sms/{id}`: the number an SMS Instasent holds went to ("" when it does not say)."""
        body = await self._request("GET", f"/sms/{provider_id}", token)
        entity = body.get("entity", body) if isinstance(body, dict) else {}
        to = entity.get("to") if isinstance(entity, dict) else None
        return to if isinstance(to, str) else ""

    async def send(self, token: str, item: SmsItem) -> Accepted:
        """`POST /sms`: one SMS. A clientId Instasent already has counts as accepted (sent before)."""
        try:
            body = await self._request("POST", "/sms", token, item.body())
        except ProviderError as e:
            if e.status == 400 and (existing := _duplicate_of(e.body)) is not None:
                return Accepted(item.client_id, existing, duplicate=True)
            raise
        entity = body.get("entity", body) if isinstance(body, dict) else {}
        return Accepted(item.client_id, str(entity.get("id", "")))

    async def send_bulk(self, token: str, items: list[SmsItem]) -> tuple[list[Accepted], list[Refused]]:
        """`POST /sms/bulk`: up to 100 SMS, validated item by item."""
        if not 0 < len(items) <= MAX_BULK:
            raise ValueError(f"a bulk request carries 1 to {MAX_BULK} items")
        body = await self._request("POST", "/sms/bulk", token, [i.body() for i in items])
        body = body if isinstance(body, dict) else {}
        accepted = [
            Accepted(str(e.get("clientId", "")), str(e.get("id", "")))
            for e in body.get("entities", [])
            if isinstance(e, dict)
        ]
        refused = []
        for error in body.get("errors", []):
            if not isinstance(error, dict):
                continue
            client_id = str(error.get("clientId") or "")
            index = error.get("index")
            if not client_id and isinstance(index, int) and 0 <= index < len(items):
                client_id = items[index].client_id
            if (existing := _duplicate_of(error)) is not None:
                accepted.append(Accepted(client_id, existing, duplicate=True))
                continue
            refused.append(Refused(client_id, str(error.get("message") or error.get("fields") or error)))
        # An item the answer does not mention at all is treated as refused, never as sent.
        mentioned = {a.client_id for a in accepted} | {r.client_id for r in refused}
        refused += [
            Refused(i.client_id, "not in Instasent's bulk answer") for i in items if i.client_id not in mentioned
        ]
        return accepted, refused
