"""What a summary is made of: the JSON schema the model writes against (for a summary and
for a chunk's notes), and the shape check a reviewer's edit must pass."""

from __future__ import annotations

from device.errors import InvalidInput


# Bounds keep a small model from looping until the token limit cuts its JSON in half.
def _text(longest: int) -> dict:
    return {"type": "string", "maxLength": longest}


def _points(most: int, fields: dict, cited: int = 8) -> dict:
    item = {"type": "object",
            "properties": {**fields, "segments": {"type": "array", "maxItems": cited,
                                                  "items": {"type": "integer"}}},
            "required": [*fields.keys(), "segments"]}
    return {"type": "array", "maxItems": most, "items": item}


def schemas(cjk: bool) -> tuple[dict, dict]:
    """The summary's schema and the notes' schema.  Lengths are in characters, so Chinese
    gets about half as many (one character is ~0.7 tokens, an English one ~0.25): generated
    tokens are the slow part of a summary.  At least one key point: small models
    otherwise write a long summary and leave every list empty."""
    short, long = (50, 250) if cjk else (120, 500)
    action = {"what": _text(short), "owner": _text(30), "due": _text(30)}
    summary = {
        "type": "object",
        "properties": {
            "title": _text(40 if cjk else 80),
            "summary": _text(long),
            "key_points": {**_points(6, {"text": _text(short)}), "minItems": 1},
            "decisions": _points(4, {"text": _text(short)}),
            "action_items": _points(6, action),
            "keywords": {"type": "array", "maxItems": 8, "items": _text(20)},
            "language": _text(10),
        },
        "required": ["title", "summary", "key_points", "decisions", "action_items",
                     "keywords", "language"],
    }
    notes = {
        "type": "object",
        "properties": {
            "key_points": {**_points(4, {"text": _text(short)}, cited=4), "minItems": 1},
            "decisions": _points(3, {"text": _text(short)}, cited=4),
            "action_items": _points(3, action, cited=4),
        },
        "required": ["key_points", "decisions", "action_items"],
    }
    return summary, notes


EDITED_TEXT_MAX, EDITED_ITEMS_MAX = 20_000, 100
"""A reviewer's edit may run longer than the model is allowed to write, within these."""


def check_summary_content(content: dict) -> None:
    """Refuse (InvalidInput) a reviewer's edit that does not have the summary's shape:
    the page and every export read it as the schema says."""
    problem = _shape_problem(schemas(cjk=False)[0], content, "the summary")
    if problem:
        raise InvalidInput(problem)


def _shape_problem(schema: dict, value, where: str) -> str | None:
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            return f"{where} must be an object"
        missing = [k for k in schema.get("required", ()) if k not in value]
        if missing:
            return f"{where} lacks {', '.join(missing)}"
        return next((p for key, sub in schema.get("properties", {}).items() if key in value
                     if (p := _shape_problem(sub, value[key], f"{where}.{key}"))), None)
    if kind == "array":
        if not isinstance(value, list) or len(value) > EDITED_ITEMS_MAX:
            return f"{where} must be a list of at most {EDITED_ITEMS_MAX} items"
        return next((p for i, item in enumerate(value)
                     if (p := _shape_problem(schema["items"], item, f"{where}[{i}]"))), None)
    if kind == "string" and not (isinstance(value, str) and len(value) <= EDITED_TEXT_MAX):
        return f"{where} must be text of at most {EDITED_TEXT_MAX:,} characters"
    if kind == "integer" and not (isinstance(value, int) and not isinstance(value, bool)):
        return f"{where} must be a whole number"
    return None
