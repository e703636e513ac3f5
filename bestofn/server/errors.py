"""Errors answered in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

from fastapi.responses import JSONResponse


class ApiError(Exception):
    """An error answered in OpenAI's shape: ``{"error": {message, type, param, code}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers

    def response(self) -> JSONResponse:
        body = {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def invalid(message: str, param: str | None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def timeout_error(timeout_s: float) -> ApiError:
    return ApiError(
        504,
        f"the request was not answered within server.request_timeout_s={timeout_s:g} s; ask "
        "for fewer candidates (n / best_of) or tokens (max_tokens), or retry when the server "
        "is less busy",
        type="timeout_error",
        code="timeout",
    )


def shutting_down() -> ApiError:
    return ApiError(
        503,
        "the server is shutting down; retry in a moment",
        type="server_error",
        code="shutting_down",
    )
