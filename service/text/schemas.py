"""Validation of text API request bodies into TextRequest."""
from __future__ import annotations

from service.errors import ApiError, validation_error
from service.providers.base import OPERATIONS, TextRequest

# option name -> (operation it belongs to, min, max)
OPTION_LIMITS = {
    "max_length": ("summarize", 10, 500),
    "max_points": ("key_points", 1, 20),
    "num_questions": ("questions", 1, 20),
}
REQUEST_FIELDS = {"text", "options", "question", "operation"}


def parse_text_request(body, operation: str | None, limits: dict, prefix: str = "") -> TextRequest:
    """Turn a decoded JSON body into a TextRequest or raise a 422 naming the field.

    `operation` comes from the route; None means it is read from the body.
    """
    if not isinstance(body, dict):
        raise ApiError(422, "VALIDATION_ERROR", "request body must be a JSON object", field=prefix + "body")
    unknown = set(body) - REQUEST_FIELDS
    if unknown:
        f = sorted(unknown)[0]
        raise validation_error(prefix + f, "unknown field")
    op = body.get("operation")
    if operation is None:
        if op is None:
            raise validation_error(prefix + "operation", f"is required; one of {list(OPERATIONS)}")
        if op not in OPERATIONS:
            raise validation_error(prefix + "operation", f"must be one of {list(OPERATIONS)}")
        operation = op
    elif op is not None and op != operation:
        raise validation_error(prefix + "operation", f"must be {operation!r} on this route (or omitted)")

    text = body.get("text")
    if text is None:
        raise validation_error(prefix + "text", "is required")
    if not isinstance(text, str):
        raise validation_error(prefix + "text", "must be a string")
    n = len(text.strip())
    if n < limits["min_text_length"]:
        raise validation_error(prefix + "text", f"must be at least {limits['min_text_length']} characters")
    if len(text) > limits["max_text_length"]:
        raise validation_error(prefix + "text", f"must be at most {limits['max_text_length']} characters")

    options = body.get("options")
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise validation_error(prefix + "options", "must be an object")
    for name, value in options.items():
        spec = OPTION_LIMITS.get(name)
        if spec is None:
            raise validation_error(prefix + f"options.{name}", f"unknown option; known: {sorted(OPTION_LIMITS)}")
        op_for, lo, hi = spec
        if op_for != operation:
            raise validation_error(prefix + f"options.{name}", f"applies to {op_for}, not {operation}")
        if isinstance(value, bool) or not isinstance(value, int):
            raise validation_error(prefix + f"options.{name}", "must be an integer")
        if not lo <= value <= hi:
            raise validation_error(prefix + f"options.{name}", f"must be between {lo} and {hi}")

    question = body.get("question")
    if operation == "qa":
        if question is None:
            raise validation_error(prefix + "question", "is required for qa")
        if not isinstance(question, str) or not question.strip():
            raise validation_error(prefix + "question", "must be a non-empty string")
        if len(question) > limits["max_question_length"]:
            raise validation_error(prefix + "question", f"must be at most {limits['max_question_length']} characters")
    elif question is not None:
        raise validation_error(prefix + "question", "only applies to qa")
    return TextRequest(operation, text, options, question)
