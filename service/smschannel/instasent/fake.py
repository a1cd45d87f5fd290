"""A fake Instasent Transactional API for tests, benchmarks and the demo.

A real HTTP server (Starlette on uvicorn) with the real paths (with and without a trailing slash),
bearer auth, `POST /sms`, `POST /sms/bulk` with per-item errors, `clientId` uniqueness,
`GET /sms`, `GET /sms/{id}`, `GET /organization/account/`, errors as `{"message": ...}` with
400/401/402/404/413/429/5xx and rate-limit headers, fault injection, per-country `{{unsubscribe}}`
replacement, and delivery callbacks to each token's callback URL.

Run it: `python -m smschannel.instasent.fake --port 8099 --token test-token`. Control endpoints live
under `/_fake/` (tokens, faults, received messages, simulated opt-outs); tests use the `FakeInstasent`
object directly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import random
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import phonenumbers
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..asgi import serve_in_loop

__all__ = ["FakeInstasent", "Faults", "ReceivedSms", "unsubscribe_replacement"]

log = logging.getLogger("smschannel.fake_instasent")

UNSUBSCRIBE = "{{unsubscribe}}"
_SENDER = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}|\+?[0-9]{1,15}")


def unsubscribe_replacement(country: str) -> str:
    """What Instasent puts in place of `{{unsubscribe}}` for a destination country (SPEC §6)."""
    if country in ("US", "CA"):
        return "Stop to opt-out"
    if country == "FR":
        return "STOP au #sms#"
    return "nosms.to/xxxxxxx"


@dataclass
class Faults:
    """Fault injection: latency, a 5xx rate, bursts of 429, a request-rate limit."""

    latency: float = 0.0
    error_rate: float = 0.0
    burst_429: int = 0
    rate_limit: int = 0  # requests per second per token; 0 = unlimited
    reset_after: float = 1.0  # what X-RateLimit-Reset says during a 429 burst


@dataclass
class ReceivedSms:
    """One SMS the fake accepted."""

    id: str
    token: str
    client_id: str
    sender: str
    to: str
    text: str  # as delivered (marker replaced)
    raw_text: str
    country: str
    status: str = "sent"


@dataclass
class _Account:
    token: str
    balance: float = 1000.0
    callback_url: str = ""
    window_start: float = 0.0
    window_count: int = 0


@dataclass
class FakeInstasent:
    """The fake's state and its ASGI app."""

    faults: Faults = field(default_factory=Faults)
    # Tokens whose every call answers 503 or 429 (in turn) until removed: an outage of one account.
    down: set[str] = field(default_factory=set)
    rejected_numbers: set[str] = field(default_factory=set)
    send_callbacks: bool = True
    accounts: dict[str, _Account] = field(default_factory=dict)
    messages: dict[str, ReceivedSms] = field(default_factory=dict)
    by_client_id: dict[tuple[str, str], str] = field(default_factory=dict)
    requests: int = 0
    duplicate_attempts: int = 0  # SMS refused because their clientId was already used
    first_receive: dict[str, float] = field(default_factory=dict)  # token → time of its first SMS
    last_receive: dict[str, float] = field(default_factory=dict)
    callbacks_sent: int = 0
    callback_failures: int = 0
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _http: httpx.AsyncClient | None = None
    base_url: str = ""

    def add_token(self, token: str, *, balance: float = 1_000_000.0, callback_url: str = "") -> None:
        """Make `token` valid (its balance in SMS parts, and where its callbacks go)."""
        self.accounts[token] = _Account(token, balance, callback_url)

    def received(self, token: str | None = None) -> list[ReceivedSms]:
        """Every SMS accepted, oldest first."""
        return [m for m in self.messages.values() if token is None or m.token == token]

    # -- the HTTP surface ---------------------------------------------------------------

    @property
    def app(self) -> Starlette:
        """The ASGI app."""
        routes = []
        for path, endpoint, methods in (
            ("/sms", self._sms, ["GET", "POST"]),
            ("/sms/bulk", self._bulk, ["POST"]),
            ("/sms/{id}", self._get_sms, ["GET"]),
            ("/organization/account", self._account, ["GET"]),
        ):
            for p in (path, path + "/"):
                routes.append(Route(p, endpoint, methods=methods))
        routes += [
            Route("/_fake/tokens", self._ctl_token, methods=["POST"]),
            Route("/_fake/faults", self._ctl_faults, methods=["POST"]),
            Route("/_fake/messages", self._ctl_messages, methods=["GET"]),
            Route("/_fake/stats", self._ctl_stats, methods=["GET"]),
            Route("/_fake/stop", self._ctl_stop, methods=["POST"]),
        ]
        return Starlette(routes=routes)

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"message": message}, status_code=status, headers=headers)

    async def _gate(self, request: Request) -> tuple[_Account | None, Response | None]:
        """Auth, faults and rate limits shared by every API call."""
        self.requests += 1
        if self.faults.latency:
            await asyncio.sleep(self.faults.latency)
        auth = request.headers.get("authorization", "")
        account = self.accounts.get(auth.removeprefix("Bearer ").strip()) if auth.startswith("Bearer ") else None
        if account is None:
            return None, self._error(401, "Unauthorized: invalid or missing token")
        limit_headers = {"X-RateLimit-Limit": str(self.faults.rate_limit or 1000)}
        if account.token in self.down:
            if self.requests % 2:
                return None, self._error(503, "Service unavailable")
            headers = {**limit_headers, "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "0.05"}
            return None, self._error(429, "Too many requests", headers)
        if self.faults.burst_429 > 0:
            self.faults.burst_429 -= 1
            reset = str(round(self.faults.reset_after, 3))
            return None, self._error(
                429, "Too many requests", {**limit_headers, "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}
            )
        if self.faults.rate_limit:
            now = time.monotonic()
            if now - account.window_start >= 1.0:
                account.window_start, account.window_count = now, 0
            account.window_count += 1
            if account.window_count > self.faults.rate_limit:
                reset = str(round(1.0 - (now - account.window_start), 3))
                return None, self._error(
                    429,
                    "Too many requests",
                    {**limit_headers, "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset},
                )
        if self.faults.error_rate and random.random() < self.faults.error_rate:
            return None, self._error(random.choice([500, 502, 503]), "Internal error")
        return account, None

    def _validate(self, item: Any) -> tuple[dict[str, list[str]], str]:
        """Field errors of one SMS object, and the destination country."""
        errors: dict[str, list[str]] = {}
        if not isinstance(item, dict):
            return {"body": ["must be an object"]}, ""
        sender, to, text, client_id = item.get("from"), item.get("to"), item.get("text"), item.get("clientId")
        if not isinstance(sender, str) or not _SENDER.fullmatch(sender):
            errors["from"] = ["1-11 alphanumeric characters or up to 15 digits"]
        country = ""
        try:
            number = phonenumbers.parse(to if isinstance(to, str) else "", None)
            if not phonenumbers.is_valid_number(number):
                raise ValueError
            country = phonenumbers.region_code_for_number(number) or ""
        except (phonenumbers.NumberParseException, ValueError):
            errors["to"] = ["not a valid E.164 number"]
        if not isinstance(text, str) or not text:
            errors["text"] = ["required"]
        if client_id is not None and (not isinstance(client_id, str) or len(client_id) > 40):
            errors["clientId"] = ["at most 40 characters"]
        return errors, country

    def _create(self, account: _Account, item: dict[str, Any], country: str) -> tuple[dict[str, Any] | None, str]:
        """Create one SMS; returns its entity, or None and why (duplicate clientId, no balance)."""
        client_id = item.get("clientId") or ""
        if client_id and (account.token, client_id) in self.by_client_id:
            self.duplicate_attempts += 1
            return None, "duplicate"
        if account.balance < 1:
            return None, "balance"
        account.balance -= 1
        raw = item["text"]
        text = raw.replace(UNSUBSCRIBE, unsubscribe_replacement(country))
        sms = ReceivedSms(
            f"fake{next(self._ids):09d}", account.token, client_id, item["from"], item["to"], text, raw, country
        )
        self.messages[sms.id] = sms
        now = time.time()
        self.first_receive.setdefault(account.token, now)
        self.last_receive[account.token] = now
        if client_id:
            self.by_client_id[(account.token, client_id)] = sms.id
        if self.send_callbacks and account.callback_url:
            status = "rejected" if sms.to in self.rejected_numbers else "delivered"
            self._spawn(self._deliver(account, sms, status))
        return self._entity(sms), ""

    @staticmethod
    def _entity(sms: ReceivedSms) -> dict[str, Any]:
        return {
            "id": sms.id,
            "clientId": sms.client_id or None,
            "from": sms.sender,
            "to": sms.to,
            "text": sms.text,
            "status": sms.status,
            "country": sms.country,
        }

    async def _sms(self, request: Request) -> Response:
        account, refused = await self._gate(request)
        if refused is not None or account is None:
            return refused or self._error(401, "Unauthorized")
        if request.method == "GET":
            return JSONResponse({"entities": [self._entity(m) for m in self.received(account.token)][-100:]})
        try:
            item = json.loads(await request.body())
        except ValueError:
            return self._error(400, "Malformed JSON")
        errors, country = self._validate(item)
        if errors:
            return JSONResponse({"message": "Validation failed", "errors": {"fields": errors}}, status_code=400)
        entity, why = self._create(account, item, country)
        if why == "duplicate":
            existing = self.by_client_id[(account.token, item["clientId"])]
            return JSONResponse(
                {"message": "clientId already used", "code": "duplicate_client_id", "id": existing}, 400
            )
        if why == "balance":
            return self._error(402, "Payment required: not enough balance")
        return JSONResponse({"entity": entity}, status_code=201)

    async def _bulk(self, request: Request) -> Response:
        account, refused = await self._gate(request)
        if refused is not None or account is None:
            return refused or self._error(401, "Unauthorized")
        try:
            items = json.loads(await request.body())
        except ValueError:
            return self._error(400, "Malformed JSON")
        if not isinstance(items, list) or not items:
            return self._error(400, "The body must be a non-empty array of SMS")
        if len(items) > 100:
            return self._error(413, "At most 100 SMS per bulk request")
        if account.balance < 1:
            return self._error(402, "Payment required: not enough balance")
        entities, errors = [], []
        for index, item in enumerate(items):
            field_errors, country = self._validate(item)
            client_id = item.get("clientId") if isinstance(item, dict) else None
            if field_errors:
                errors.append(
                    {"index": index, "clientId": client_id, "fields": field_errors, "message": "Validation failed"}
                )
                continue
            entity, why = self._create(account, item, country)
            if entity is not None:
                entities.append(entity)
            elif why == "duplicate":
                existing = self.by_client_id[(account.token, item["clientId"])]
                errors.append(
                    {
                        "index": index,
                        "clientId": client_id,
                        "code": "duplicate_client_id",
                        "id": existing,
                        "message": "clientId already used",
                    }
                )
            else:
                errors.append(
                    {"index": index, "clientId": client_id, "message": "Payment required: not enough balance"}
                )
        return JSONResponse({"entities": entities, "errors": errors}, status_code=201)

    async def _get_sms(self, request: Request) -> Response:
        account, refused = await self._gate(request)
        if refused is not None or account is None:
            return refused or self._error(401, "Unauthorized")
        sms = self.messages.get(request.path_params["id"])
        if sms is None or sms.token != account.token:
            return self._error(404, "Not found")
        return JSONResponse({"entity": self._entity(sms)})

    async def _account(self, request: Request) -> Response:
        account, refused = await self._gate(request)
        if refused is not None or account is None:
            return refused or self._error(401, "Unauthorized")
        return JSONResponse({"entity": {"available": account.balance, "currency": "EUR"}})

    # -- callbacks ------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, account: _Account, sms: ReceivedSms, status: str, **extra: Any) -> bool:
        """POST one callback to the token's callback URL, retrying non-2xx a few times with backoff."""
        payload = {
            "id": sms.id,
            "clientId": sms.client_id or None,
            "status": status,
            "code": "0" if status == "delivered" else "1",
            "eventAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **extra,
        }
        sms.status = status
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=5.0)
        for attempt in range(5):
            try:
                response = await self._http.post(account.callback_url, json=payload)
                if response.status_code < 300:
                    self.callbacks_sent += 1
                    return True
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2 * 2**attempt)
        self.callback_failures += 1
        return False

    async def opt_out(self, sms_id: str) -> bool:
        """Simulate the recipient clicking the unsubscribe link: a `stop` callback for that SMS."""
        sms = self.messages[sms_id]
        return await self._deliver(self.accounts[sms.token], sms, "stop")

    async def idle(self) -> None:
        """Wait until every pending callback has been delivered (or given up); bound it with asyncio.timeout."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    # -- control endpoints (for `python -m` use) ------------------------------------------

    async def _ctl_token(self, request: Request) -> Response:
        body = await request.json()
        self.add_token(
            body["token"], balance=float(body.get("balance", 1_000_000)), callback_url=body.get("callback_url", "")
        )
        return JSONResponse({"ok": True})

    async def _ctl_faults(self, request: Request) -> Response:
        body = await request.json()
        for key, value in body.items():
            if key == "rejected_numbers":
                self.rejected_numbers = set(value)
            elif key == "down":
                self.down = set(value)
            elif hasattr(self.faults, key):
                setattr(self.faults, key, value)
        return JSONResponse({"ok": True})

    async def _ctl_messages(self, request: Request) -> Response:
        return JSONResponse({"messages": [vars(m) for m in self.messages.values()], "requests": self.requests})

    async def _ctl_stats(self, request: Request) -> Response:
        """Counts for one token (`?token=`), and its recipients with `&recipients=1`."""
        token = request.query_params.get("token", "")
        mine = self.received(token or None)
        body: dict[str, Any] = {
            "received": len(mine),
            "unique_client_ids": len({m.client_id for m in mine}),
            "duplicate_attempts": self.duplicate_attempts,
            "requests": self.requests,
            "first_time": self.first_receive.get(token),
            "last_time": self.last_receive.get(token),
        }
        if request.query_params.get("recipients"):
            body["recipients"] = [m.to for m in mine]
        if request.query_params.get("ids"):
            body["ids"] = [[m.id, m.client_id] for m in mine]
        return JSONResponse(body)

    async def _ctl_stop(self, request: Request) -> Response:
        body = await request.json()
        sms_id = body.get("id") or self.by_client_id.get((body.get("token", ""), body.get("clientId", "")), "")
        if not sms_id and body.get("to"):
            sms_id = next((m.id for m in reversed(self.messages.values()) if m.to == body["to"]), "")
        if sms_id not in self.messages:
            return self._error(404, "no such SMS")
        return JSONResponse({"delivered": await self.opt_out(sms_id)})

    # -- running it -----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Serve in this event loop; yields the base URL."""
        try:
            async with serve_in_loop(self.app, host, port) as url:
                self.base_url = url
                yield url
        finally:
            for pending in list(self._tasks):
                pending.cancel()
            if self._http is not None:
                await self._http.aclose()
                self._http = None


def main() -> None:
    """`python -m smschannel.instasent.fake`: serve the fake until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--token", action="append", default=[], help="a valid token (repeatable)")
    parser.add_argument("--callback-url", default="", help="callback URL of the --token tokens")
    args = parser.parse_args()
    fake = FakeInstasent()
    for token in args.token:
        fake.add_token(token, callback_url=args.callback_url)
    uvicorn.run(fake.app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
