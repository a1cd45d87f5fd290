"""SmsChannelConfig: the write-only token, its check with Instasent, the callback URL and its secret."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from smschannel.server import App
from smschannel.v1 import sms_channel_service_pb2 as pb

from .conftest import INSTASENT_TOKEN, StoreCtx, Stubs, set_channel
from .rpc_errors import field_violations


async def get_config(stubs: Stubs, store: StoreCtx) -> pb.SmsChannelConfig:
    return await stubs.sms.GetSmsChannelConfig(
        pb.GetSmsChannelConfigRequest(name=f"{store.name}/smsChannelConfig"), metadata=store.md
    )


async def test_a_new_store_has_a_callback_url_and_no_token(stubs: Stubs, store: StoreCtx) -> None:
    config = await get_config(stubs, store)
    assert config.name == f"{store.name}/smsChannelConfig"
    assert not config.has_token
    assert config.token_status == pb.TOKEN_STATUS_UNSPECIFIED
    prefix = f"http://127.0.0.1:8080/instasent/callbacks/{store.id}/"
    assert config.callback_url.startswith(prefix)
    secret = config.callback_url.removeprefix(prefix)
    assert len(secret) >= 22  # ≥ 128 bits of url-safe base64
    assert (await get_config(stubs, store)).callback_url == config.callback_url  # stable until rotated


async def test_a_valid_token_is_checked_masked_and_never_returned(app: App, stubs: Stubs, store: StoreCtx) -> None:
    saved = await set_channel(stubs, store, api_token=INSTASENT_TOKEN, default_country="es", default_sender="Acme")
    assert saved.has_token
    assert saved.api_token == ""
    assert saved.api_token_hint == "••••1a2b"
    assert saved.token_status == pb.TOKEN_STATUS_VALID
    assert saved.account_balance > 0
    assert saved.default_country == "ES"
    assert saved.default_sender == "Acme"
    again = await get_config(stubs, store)
    assert again.api_token == ""
    assert again.has_token
    # Encrypted at rest: the clear token is nowhere in the row.
    row = await app.storage.db.fetch_one("SELECT token FROM channel_configs WHERE store_id = ?", (store.id,))
    assert row is not None
    assert INSTASENT_TOKEN.encode() not in row["token"]


async def test_a_refused_token_is_saved_as_invalid_with_instasents_message(stubs: Stubs, store: StoreCtx) -> None:
    saved = await set_channel(stubs, store, api_token="not-a-real-token")
    assert saved.has_token
    assert saved.token_status == pb.TOKEN_STATUS_INVALID
    assert "Unauthorized" in saved.token_status_message


async def test_an_unreachable_instasent_leaves_the_token_unchecked(
    app: App, stubs: Stubs, store: StoreCtx, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app.channel.instasent, "_base", "http://127.0.0.1:9")
    saved = await set_channel(stubs, store, api_token=INSTASENT_TOKEN)
    assert saved.token_status == pb.TOKEN_STATUS_UNCHECKED
    assert "could not be reached" in saved.token_status_message


async def test_removing_the_token_with_an_update_mask(stubs: Stubs, store: StoreCtx) -> None:
    await set_channel(stubs, store, api_token=INSTASENT_TOKEN)
    saved = await stubs.sms.UpdateSmsChannelConfig(
        pb.UpdateSmsChannelConfigRequest(
            sms_channel_config=pb.SmsChannelConfig(name=f"{store.name}/smsChannelConfig"),
            update_mask={"paths": ["api_token"]},
        ),
        metadata=store.md,
    )
    assert not saved.has_token
    assert saved.api_token_hint == ""


async def test_rotating_the_secret_changes_the_callback_url(stubs: Stubs, store: StoreCtx) -> None:
    before = await get_config(stubs, store)
    rotated = await stubs.sms.RotateCallbackSecret(
        pb.RotateCallbackSecretRequest(name=f"{store.name}/smsChannelConfig"), metadata=store.md
    )
    assert rotated.callback_url != before.callback_url
    assert (await get_config(stubs, store)).callback_url == rotated.callback_url


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"default_country": "XX"}, "sms_channel_config.default_country"),
        ({"default_sender": "ThisIsTooLongASender"}, "sms_channel_config.default_sender"),
        ({"default_sender": "1234567890123456"}, "sms_channel_config.default_sender"),
        ({"default_sender": "Acme Shop!"}, "sms_channel_config.default_sender"),
    ],
)
async def test_bad_config_is_invalid_argument_naming_the_field(
    stubs: Stubs, store: StoreCtx, fields: dict[str, str], bad: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await set_channel(stubs, store, **fields)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad in field_violations(e.value)


@pytest.mark.parametrize("sender", ["A", "Acme2026", "ElevenChars", "123456789012345", "+34600111222"])
async def test_good_senders_are_accepted(stubs: Stubs, store: StoreCtx, sender: str) -> None:
    assert (await set_channel(stubs, store, default_sender=sender)).default_sender == sender


async def test_a_stale_etag_is_aborted(stubs: Stubs, store: StoreCtx) -> None:
    first = await set_channel(stubs, store, default_country="FR")
    await set_channel(stubs, store, default_country="ES")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await set_channel(stubs, store, default_country="PT", etag=first.etag)
    assert e.value.code() == grpc.StatusCode.ABORTED


async def test_one_etag_lets_one_of_concurrent_updates_through(stubs: Stubs, store: StoreCtx) -> None:
    """The etag is judged inside the atomic change: while each update waits for Instasent to check its
    token, the others must not all pass a check made before it."""
    first = await set_channel(stubs, store, default_country="FR")
    results = await asyncio.gather(
        *(
            set_channel(stubs, store, default_country=country, api_token=INSTASENT_TOKEN, etag=first.etag)
            for country in ("ES", "PT", "IT", "DE", "GB")
        ),
        return_exceptions=True,
    )
    assert sum(isinstance(r, pb.SmsChannelConfig) for r in results) == 1
    assert all(r.code() == grpc.StatusCode.ABORTED for r in results if isinstance(r, grpc.aio.AioRpcError))


async def test_another_stores_config_is_not_found(stubs: Stubs, store: StoreCtx, other_store: StoreCtx) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stubs.sms.GetSmsChannelConfig(
            pb.GetSmsChannelConfigRequest(name=f"{other_store.name}/smsChannelConfig"), metadata=store.md
        )
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
