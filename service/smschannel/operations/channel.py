"""SMS channel configuration use cases (SPEC §2)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from ..crypto import TokenCipher
from ..domain.channel import (
    ChannelConfig,
    FrequencyCap,
    SendingRules,
    TokenStatus,
    new_callback_secret,
    token_hint,
)
from ..domain.quiet_hours import QuietHours
from ..errors import Aborted, echo
from ..instasent.client import InstasentClient, ProviderError
from ..names import ChannelConfigName
from ..storage import ChannelConfigRepository

__all__ = ["ChannelChanges", "ChannelOps"]

log = logging.getLogger("smschannel.channel")


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ChannelChanges:
    """What an update sets (None = leave as is). `api_token` "" removes the token."""

    api_token: str | None = None
    default_country: str | None = None
    default_sender: str | None = None
    time_zone: str | None = None
    quiet_hours: QuietHours | None = None
    frequency_cap: FrequencyCap | None = None  # max_sms 0: remove the cap
    part_prices: tuple[str, Mapping[str, int]] | None = None  # (currency, country → nanos a part)

    def rules(self, rules: SendingRules) -> SendingRules:
        """The store's sending rules with these changes."""
        if self.time_zone is not None:
            rules = replace(rules, time_zone=self.time_zone)
        if self.quiet_hours is not None:
            rules = replace(rules, quiet_hours=self.quiet_hours)
        if self.frequency_cap is not None:
            rules = replace(rules, frequency_cap=self.frequency_cap if self.frequency_cap.max_sms else None)
        if self.part_prices is not None:
            rules = replace(rules, currency=self.part_prices[0], part_prices=self.part_prices[1])
        return rules


# Replicas sharing a database each cache configs: another replica's change is seen within this long.
CACHE_SECONDS = 2.0


@dataclass
class ChannelOps:
    """Reads and changes channel configs; keeps tokens encrypted and checks them with Instasent."""

    configs: ChannelConfigRepository
    cipher: TokenCipher
    instasent: InstasentClient
    public_url: str
    clock: Callable[[], datetime] = field(default=_utcnow)
    # Told of a store whose time zone or quiet hours changed (held messages are judged again).
    on_rules_changed: Callable[[str], Awaitable[None]] | None = None
    # Callbacks read the config on every event: this process's changes go through this cache, and
    # another replica's are read again after CACHE_SECONDS.
    _cache: dict[str, tuple[float, ChannelConfig]] = field(default_factory=dict)

    def callback_url(self, config: ChannelConfig) -> str:
        """What the admin pastes into Instasent's dashboard."""
        return f"{self.public_url}/instasent/callbacks/{config.store_id}/{config.callback_secret}"

    def _fresh(self, store_id: str) -> ChannelConfig:
        return ChannelConfig(
            store_id=store_id, callback_secret=new_callback_secret(), update_time=self.clock(), version=1
        )

    async def get(self, store_id: str, fresh: bool = False) -> ChannelConfig:
        """The config; a store that never saved one gets its callback secret now. `fresh`: as stored
        now, for a process whose changes are made by another (an outbox process of its own)."""
        cached = self._cache.get(store_id)
        if cached is not None and not fresh and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[1]
        config = await self.configs.get(store_id)
        if config is None:
            return await self._save(store_id, lambda current: current or self._fresh(store_id))
        self._cache[store_id] = (time.monotonic(), config)
        return config

    async def _save(self, store_id: str, change: Callable[[ChannelConfig | None], ChannelConfig]) -> ChannelConfig:
        self._cache.pop(store_id, None)
        config = await self.configs.update(store_id, change)
        self._cache[store_id] = (time.monotonic(), config)
        return config

    async def update(self, store_id: str, changes: ChannelChanges, etag: str = "") -> ChannelConfig:
        """Apply the changes; a new token is checked with Instasent first (outside any transaction).
        With `etag`, Aborted unless the config is still at it, judged inside the atomic change."""
        check: tuple[TokenStatus, str, float] | None = None
        if changes.api_token:
            check = await self._check_token(changes.api_token)

        def change(current: ChannelConfig | None) -> ChannelConfig:
            base = current or self._fresh(store_id)
            if etag and etag != base.etag:
                raise Aborted(f"{ChannelConfigName(store_id)} changed since etag {echo(etag)}; get it again")
            new = base
            if changes.default_country is not None:
                new = replace(new, default_country=changes.default_country)
            if changes.default_sender is not None:
                new = replace(new, default_sender=changes.default_sender)
            new = replace(new, rules=changes.rules(new.rules))
            if changes.api_token == "":
                new = replace(
                    new,
                    token_ciphertext=None,
                    token_hint="",
                    token_status=TokenStatus.UNSPECIFIED,
                    token_status_message="",
                    account_balance=0.0,
                )
            elif changes.api_token is not None and check is not None:
                status, message, balance = check
                new = replace(
                    new,
                    token_ciphertext=self.cipher.encrypt(changes.api_token),
                    token_hint=token_hint(changes.api_token),
                    token_status=status,
                    token_status_message=message,
                    account_balance=balance,
                )
            if new == base and current is not None:
                return current
            return replace(new, update_time=self.clock(), version=base.version + 1)

        before = await self.get(store_id)
        config = await self._save(store_id, change)
        judged = (config.rules.time_zone, config.rules.quiet_hours)
        if judged != (before.rules.time_zone, before.rules.quiet_hours) and self.on_rules_changed is not None:
            await self.on_rules_changed(store_id)
        return config

    async def _check_token(self, token: str) -> tuple[TokenStatus, str, float]:
        try:
            account = await self.instasent.account(token)
        except ProviderError as e:
            if e.retryable:
                log.warning("token check: Instasent unreachable", extra={"status": e.status})
                return TokenStatus.UNCHECKED, f"Instasent could not be reached: {e.message}", 0.0
            return TokenStatus.INVALID, e.message, 0.0
        return TokenStatus.VALID, "", account.balance

    async def rotate_secret(self, store_id: str) -> ChannelConfig:
        """A new callback secret: the old callback URL stops working at once."""

        def change(current: ChannelConfig | None) -> ChannelConfig:
            base = current or self._fresh(store_id)
            return replace(
                base, callback_secret=new_callback_secret(), update_time=self.clock(), version=base.version + 1
            )

        return await self._save(store_id, change)

    async def mark_token_invalid(self, store_id: str, message: str) -> None:
        """Instasent answered 401 while sending: the admin must see it on the config."""

        def change(current: ChannelConfig | None) -> ChannelConfig:
            if current is None or current.token_status is TokenStatus.INVALID:
                return current or self._fresh(store_id)
            return replace(
                current,
                token_status=TokenStatus.INVALID,
                token_status_message=message,
                update_time=self.clock(),
                version=current.version + 1,
            )

        await self._save(store_id, change)

    def token(self, config: ChannelConfig) -> str | None:
        """The clear token, for a provider call only."""
        return None if config.token_ciphertext is None else self.cipher.decrypt(config.token_ciphertext)
