"""A request that got no answer, mapped onto the error tree the same for every endpoint;
and the method in every message."""

from __future__ import annotations

import ssl

import httpcore
import pytest

from infra_observer.errors import MisconfiguredSinkError, RetryableDeliveryError
from infra_observer.prefect_api.client import Answer
from infra_observer.prefect_api.statuses import raise_for_status, transport_failure

URL = "http://127.0.0.1:4200/api/flow_runs/filter"


def test_a_timeout_passes() -> None:
    error = transport_failure(httpcore.ReadTimeout("read"), url=URL)
    assert type(error) is RetryableDeliveryError
    assert str(error) == f"POST {URL} timed out"


def test_a_refused_connection_passes_and_names_the_url_setting() -> None:
    error = transport_failure(httpcore.ConnectError("All connection attempts failed"), url=URL)
    assert type(error) is RetryableDeliveryError
    assert "is the Prefect server up, and PREFECT_API_URL right?" in str(error)


def test_a_certificate_that_does_not_verify_needs_the_ca_bundle() -> None:
    try:
        try:
            raise ssl.SSLCertVerificationError("certificate verify failed")
        except ssl.SSLError as cause:
            raise httpcore.ConnectError("handshake failed") from cause
    except httpcore.ConnectError as exc:
        error = transport_failure(exc, url=URL, method="GET")
    assert isinstance(error, MisconfiguredSinkError)
    assert str(error).startswith(f"GET {URL} failed")
    assert "INFRA_OBSERVER_EMITTER_CA_BUNDLE" in str(error)


@pytest.mark.parametrize(("method", "status"), [("GET", 503), ("POST", 429)])
def test_the_message_names_the_method(method: str, status: int) -> None:
    with pytest.raises(RetryableDeliveryError, match=f"^{method} {URL} answered {status}$"):
        raise_for_status(
            Answer(method=method, url=URL, status_code=status, headers={}, content=b""),
            url=URL,
            method=method,
        )
