"""An OpenAI chat-completions request, checked at the edge, and errors in OpenAI's shape.

Every refusal names the field (`param`) and says what is wrong, with the status OpenAI
would give, so any OpenAI client shows it as it would show OpenAI's own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, JsonResponse
from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

ROLES = ("system", "user", "assistant")
MAX_STOP_STRINGS = 4
MAX_TOKENS_LIMIT = 32_768
TEMPERATURE_RANGE = (0.0, 2.0)  # as OpenAI takes them; the chat's settings too
TOP_P_RANGE = (0.0, 1.0)
# The largest request follows the context: a token is rarely more than 8 characters, each at
# most 6 bytes in JSON (\uXXXX), and long runs of one symbol reach 48 bytes; the envelope
# (roles, parameters, a JSON schema) gets a fixed allowance on top.
BYTES_PER_TOKEN = 64
ENVELOPE_BYTES = 64 * 1024
# Deeper than any schema a model can follow; what is deeper is refused before it is walked.
MAX_FORMAT_DEPTH = 64

FIELDS = {"model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens",
          "temperature", "top_p", "stop", "seed", "response_format"}  # fmt: skip
IGNORED = {"user", "metadata", "store", "service_tier"}  # about the caller, not the answer
# Accepted only with the value that changes nothing; otherwise the answer would silently
# differ from what the client asked for.
NEUTRAL: dict[str, tuple[Any, ...]] = {
    "n": (1,), "logprobs": (False,), "top_logprobs": (0,), "presence_penalty": (0,),
    "frequency_penalty": (0,), "logit_bias": ({},), "tools": ([],), "functions": ([],),
    "tool_choice": ("none",), "function_call": ("none",), "parallel_tool_calls": (True, False),
}  # fmt: skip


class OpenAIError(Exception):
    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
        retry_after: int | None = None,  # a 429's seconds to wait (a quota's reset); else 2
    ) -> None:
        super().__init__(message)
        self.status, self.param, self.code, self.kind = status, param, code, kind
        self.retry_after = retry_after

    def response(self, headers: dict[str, str] | None = None) -> JsonResponse:
        body = {"message": str(self), "type": self.kind, "param": self.param, "code": self.code}
        return JsonResponse({"error": body}, status=self.status, headers=headers)


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: list[dict[str, str]]
    stream: bool
    include_usage: bool  # stream_options.include_usage: a last chunk with the token counts
    max_tokens: int | None
    temperature: float
    top_p: float
    stop: tuple[str, ...]
    seed: int | None
    grammar: str | None  # GBNF from response_format, if it asks for JSON: local models keep it
    # response_format as the client sent it, if it asks for JSON: outside models are sent it
    response_format: dict[str, Any] | None = None


def read_body(request: HttpRequest) -> bytes:
    """The request's body, refused by its size (which follows the context) before it is read."""
    limit = int(settings.ENGINE_REQUEST_BYTES)
    declared = str(request.META.get("CONTENT_LENGTH") or "0")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(f"{int(declared)} bytes", limit)
    try:
        body = request.body  # a chunked body declares no length: Django caps what it reads
    except RequestDataTooBig:
        raise _too_large(f"over {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes", limit) from None
    if len(body) > limit:
        raise _too_large(f"{len(body)} bytes", limit)
    return body


def _too_large(size: str, limit: int) -> OpenAIError:
    return OpenAIError(
        f"The request is {size}; this node takes at most {limit} bytes, which follows its "
        f"context of {settings.ENGINE_CONTEXT_PER_SLOT} tokens (SOVEREIGN_ENGINE_CONTEXT).",
        code="request_too_large",
    )


def load_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise OpenAIError("The request body is not valid JSON.") from None
    except RecursionError:
        raise OpenAIError("The request body's JSON is nested too deeply.") from None


def parse_chat_request(body: bytes) -> ChatRequest:
    data = load_json(body)
    if not isinstance(data, dict):
        raise OpenAIError("The request body must be a JSON object.")
    _refuse_unsupported(data)
    response_format = _response_format(data.get("response_format"))
    return ChatRequest(
        model=_model(data.get("model")),
        messages=parse_messages(data.get("messages")),
        stream=_boolean(data, "stream", False),
        include_usage=_include_usage(data.get("stream_options")),
        max_tokens=_max_tokens(data),
        temperature=_number(data, "temperature", 1.0, *TEMPERATURE_RANGE),
        top_p=_number(data, "top_p", 1.0, *TOP_P_RANGE),
        stop=_stop(data.get("stop")),
        seed=_seed(data.get("seed")),
        grammar=_grammar(response_format),
        response_format=response_format,
    )


def _refuse_unsupported(data: dict[str, Any]) -> None:
    for name, value in data.items():
        if name in FIELDS or name in IGNORED or value is None:
            continue
        if name not in NEUTRAL:
            raise OpenAIError(
                f"Unrecognized request argument supplied: {name}.",
                param=name,
                code="unsupported_parameter",
            )
        neutral = NEUTRAL[name]
        if value not in neutral or isinstance(value, bool) != isinstance(neutral[0], bool):
            raise OpenAIError(
                f"'{name}' is not supported by this node; leave it out.",
                param=name,
                code="unsupported_parameter",
            )


def _model(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise OpenAIError(
            "'model' is required: the name of a model from GET /v1/models.", param="model"
        )
    return value


def parse_messages(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise OpenAIError("'messages' must be a non-empty list.", param="messages")
    return [_message(message, index) for index, message in enumerate(value)]


def _message(message: Any, index: int) -> dict[str, str]:
    param = f"messages[{index}]"
    if not isinstance(message, dict) or message.get("role") not in ROLES:
        raise OpenAIError(f"{param} needs a 'role' of {', '.join(ROLES)}.", param=param)
    content = message.get("content")
    if isinstance(content, list):  # the parts form: only text parts are understood here
        if not all(isinstance(p, dict) and p.get("type") == "text" for p in content):
            raise OpenAIError(
                f"{param}.content may only have text parts.", param=f"{param}.content"
            )
        content = "".join(str(part.get("text", "")) for part in content)
    if not isinstance(content, str):
        raise OpenAIError(f"{param}.content must be a string.", param=f"{param}.content")
    return {"role": message["role"], "content": content}


def _boolean(data: dict[str, Any], name: str, default: bool) -> bool:
    value = data.get(name, default)
    if not isinstance(value, bool):
        raise OpenAIError(f"'{name}' must be true or false.", param=name)
    return value


def _include_usage(value: Any) -> bool:
    if value is None:
        return False
    if not isinstance(value, dict):
        raise OpenAIError("'stream_options' must be an object.", param="stream_options")
    return _boolean(value, "include_usage", False)


def _max_tokens(data: dict[str, Any]) -> int | None:
    value = data.get("max_completion_tokens", data.get("max_tokens"))
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_TOKENS_LIMIT:
        raise OpenAIError(
            f"'max_tokens' must be a whole number from 1 to {MAX_TOKENS_LIMIT}.", param="max_tokens"
        )
    return value


def _number(data: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = data.get(name, default)
    if value is None:
        return default
    if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
        raise OpenAIError(f"'{name}' must be a number from {low:g} to {high:g}.", param=name)
    return float(value)


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if (
        not isinstance(stops, list)
        or len(stops) > MAX_STOP_STRINGS
        or not all(isinstance(s, str) and s for s in stops)
    ):
        raise OpenAIError(
            "'stop' must be a string or a list of up to 4 non-empty strings.", param="stop"
        )
    return tuple(stops)


def _seed(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**32:
        raise OpenAIError("'seed' must be a whole number from 0 to 4294967295.", param="seed")
    return value


def _response_format(value: Any) -> dict[str, Any] | None:
    """response_format if it asks for JSON (None for text), checked as far as this node needs:
    a local model enforces it as a grammar, an outside one is sent it."""
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None
    if kind not in ("json_object", "json_schema"):
        raise OpenAIError(
            "'response_format.type' must be text, json_object or json_schema.",
            param="response_format",
        )
    if kind == "json_schema" and not isinstance(_schema(value), dict):
        raise OpenAIError(
            "'response_format.json_schema.schema' must be a JSON schema object.",
            param="response_format",
        )
    if _deeper_than(value, MAX_FORMAT_DEPTH):
        raise OpenAIError(
            f"'response_format' is nested more than {MAX_FORMAT_DEPTH} levels deep.",
            param="response_format",
        )
    return dict(value)


def _schema(response_format: dict[str, Any]) -> Any:
    json_schema = response_format.get("json_schema")
    return json_schema.get("schema") if isinstance(json_schema, dict) else None


def _deeper_than(value: Any, depth: int) -> bool:
    if isinstance(value, dict):
        value = list(value.values())
    if not isinstance(value, list):
        return False
    return depth == 0 or any(_deeper_than(item, depth - 1) for item in value)


def _grammar(response_format: dict[str, Any] | None) -> str | None:
    if response_format is None:
        return None
    if response_format["type"] == "json_object":
        return JSON_GBNF
    try:
        return str(json_schema_to_gbnf(json.dumps(_schema(response_format))))
    except Exception as error:  # the converter raises plain errors for schemas it can't follow
        raise OpenAIError(
            f"The JSON schema can't be enforced: {error}", param="response_format"
        ) from None
