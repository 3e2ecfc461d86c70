"""Hook and webhook signatures verify with the ``standardwebhooks`` library, as an app would check them."""

import base64
import json
import time

import pytest
from rooms_service.signing import Signer, new_secret
from standardwebhooks import Webhook, WebhookVerificationError

BODY = json.dumps({"room": "lobby", "user": "ana", "text": "héllo"}).encode("utf-8")


def test_a_signed_body_verifies_with_the_library_and_its_secret() -> None:
    secret = new_secret()
    headers = Signer(secret).headers(BODY)
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(BODY, headers) == json.loads(BODY)


def test_another_secret_a_changed_body_or_an_old_timestamp_do_not_verify() -> None:
    secret = new_secret()
    headers = Signer(secret).headers(BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY.replace(b"ana", b"eve"), headers)
    old = Signer(secret).headers(BODY, timestamp=time.time() - 600)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, old)


def test_a_retry_keeps_its_message_id_and_each_message_gets_a_new_one() -> None:
    signer = Signer(new_secret())
    assert signer.headers(BODY, "msg_fixed")["webhook-id"] == "msg_fixed"
    assert signer.headers(BODY)["webhook-id"] != signer.headers(BODY)["webhook-id"]


def test_without_a_secret_requests_carry_an_id_and_a_timestamp_only() -> None:
    headers = Signer(None).headers(BODY)
    assert set(headers) == {"webhook-id", "webhook-timestamp"}


@pytest.mark.parametrize(
    "secret",
    [
        "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0",  # no whsec_ prefix
        "whsec_not base64!!",
        "whsec_" + base64.b64encode(b"short-key").decode(),
    ],
)
def test_a_malformed_secret_stops_the_start_without_showing_it(secret: str) -> None:
    with pytest.raises(ValueError) as refused:
        Signer(secret)
    assert secret not in str(refused.value)
    assert "whsec_" in str(refused.value)
