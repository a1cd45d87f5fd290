"""SMS channel configuration use cases (SPEC §2)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from ..crypto import TokenCipher
from ..domain.channel import ChannelConfig, TokenStatus, new_callback_secret, token_hint
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


@dataclass
class ChannelOps:
    """Reads and changes channel configs; keeps tokens encrypted and checks them with Instasent."""

    configs: ChannelConfigRepository
    cipher: TokenCipher
    instasent: InstasentClient
    public_url: str
    clock: Callable[[], datetime] = field(default=_utcnow)
    # Every change of a config goes through this object (one server process), so a cache of the
    # last stored version is coherent; callbacks read the config on every event.
    _cache: dict[str, ChannelConfig] = field(default_factory=dict)

    def callback_url(self, config: ChannelConfig) -> str:
        """What the admin pastes into Instasent's dashboard."""
        return f"{self.public_url}/instasent/callbacks/{config.store_id}/{config.callback_secret}"

    def _fresh(self, store_id: str) -> ChannelConfig:
        return ChannelConfig(
            store_id=store_id, callback_secret=new_callback_secret(), update_time=self.clock(), version=1
        )

    async def get(self, store_id: str) -> ChannelConfig:
        """The config; a store that never saved one gets its callback secret now."""
        config = self._cache.get(store_id) or await self.configs.get(store_id)
        if config is None:
            config = await self._save(store_id, lambda current: current or self._fresh(store_id))
        self._cache[store_id] = config
        return config

    async def _save(self, store_id: str, change: Callable[[ChannelConfig | None], ChannelConfig]) -> ChannelConfig:
        self._cache.pop(store_id, None)
        config = await self.configs.update(store_id, change)
        self._cache[store_id] = config
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

        return await self._save(store_id, change)

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
