"""Which provider errors a batch sends again: Bedrock's and google-genai's shapes too."""

from __future__ import annotations

from typing import Any

import pytest

from costopt_core.batch.local import transient_error


class ClientError(Exception):
    """botocore's shape: the status in a dict, the error code as the class name."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.response: dict[str, Any] = {"ResponseMetadata": {"HTTPStatusCode": status}}


def _bedrock(name: str, status: int) -> Exception:
    return type(name, (ClientError,), {})(status)


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("ThrottlingException", 429),
        ("ServiceUnavailableException", 503),
        ("InternalServerException", 500),
        ("ModelTimeoutException", 408),
    ],
)
def test_bedrock_throttling_and_server_errors_are_transient(name: str, status: int) -> None:
    assert transient_error(_bedrock(name, status))


def test_a_bedrock_validation_error_is_not() -> None:
    assert not transient_error(_bedrock("ValidationException", 400))


def test_an_int_code_is_read_as_the_http_status() -> None:
    class APIError(Exception):
        def __init__(self, code: int) -> None:
            super().__init__(code)
            self.code = code

    assert transient_error(APIError(503)) and not transient_error(APIError(400))
