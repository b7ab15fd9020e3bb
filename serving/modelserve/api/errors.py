"""OpenAI-style error bodies: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse


class APIError(Exception):
    """An error answered to the client with an OpenAI-style body."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.error_type = error_type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.error_type, self.param, self.code)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status_code)


def error_body(
    message: str, error_type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def bad_request(message: str, param: str | None = None) -> APIError:
    return APIError(400, message, param=param, code="invalid_value" if param else None)


def model_not_found(model: str) -> APIError:
    return APIError(
        404, f"The model `{model}` does not exist.", param="model", code="model_not_found"
    )


def queue_full(message: str) -> APIError:
    return APIError(429, message, error_type="rate_limit_error", code="queue_full")


def unavailable(message: str) -> APIError:
    return APIError(503, message, error_type="service_unavailable", code="unavailable")


def injected_failure() -> APIError:
    return APIError(
        500, "injected failure (fault injection)", error_type="internal_error", code="injected"
    )


def timed_out(seconds: float) -> APIError:
    return APIError(
        504,
        f"the request did not finish within the server's timeout of {seconds:g}s",
        error_type="timeout_error",
        code="timeout",
    )
