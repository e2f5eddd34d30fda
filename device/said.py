"""Text the box stores for people to read later — a revision's note, what a job is doing,
why it failed — kept as a message id with its parameters, so each reader is told it in
their own language.

A ``Said`` is a ``str`` (the English text: the CLI, logs and older code read it as it is)
that also carries its message id and parameters; the store keeps it as JSON and gives it
back as a ``Said``; the pages translate it (``web/i18n.py``).  Text stored before, or from
outside (a decoder's own words), stays a plain string and is shown as it is.

    >>> note = Said(N_("speaker %(old)s → %(new)s"), old="A", new="王芳")
    >>> note, loaded(stored(note)).params
    ('speaker A → 王芳', {'old': 'A', 'new': '王芳'})
    >>> loaded(stored(note)).said({"speaker %(old)s → %(new)s": "说话人 %(old)s → %(new)s"}.get)
    '说话人 A → 王芳'
    >>> loaded("an older note"), stored(None)
    ('an older note', None)
    >>> import pickle  # to a process pool and back, as it is
    >>> pickle.loads(pickle.dumps(Said(N_("undid: %(change)s"), change=note))).params["change"]
    'speaker A → 王芳'
"""

from __future__ import annotations

import json
from collections.abc import Callable

from device.errors import N_, TingjiError

__all__ = ["N_", "Said", "loaded", "of_error", "stored"]
_MARK = '{"said":'


class Said(str):
    message: str
    params: dict

    def __new__(cls, message: str, /, **params: object) -> Said:
        self = super().__new__(cls, _format(message, params, None))
        self.message, self.params = message, params
        return self

    def said(self, gettext: Callable[[str], str | None] | None) -> str:
        """In the language of ``gettext`` (a message id → its translation, or None)."""
        return _format(self.message, self.params, gettext)

    def as_json(self) -> dict:
        return {"said": self.message, "params": {
            key: value.as_json() if isinstance(value, Said) else value
            for key, value in self.params.items()}}

    def __reduce__(self):  # pickled (a process pool) as what it is
        return _rebuilt, (self.as_json(),)


def _format(message: str, params: dict, gettext) -> str:
    said = {key: value.said(gettext) if isinstance(value, Said) else value
            for key, value in params.items()}
    text = (gettext(message) if gettext else None) or message
    try:
        return text % said if said else text
    except (KeyError, TypeError, ValueError):  # a translation that does not fit: English
        return message % said if said else message


def _rebuilt(data: dict) -> Said:
    return Said(data["said"], **{key: _rebuilt(value) if isinstance(value, dict)
                                 and "said" in value else value
                                 for key, value in data.get("params", {}).items()})


def stored(text: str | None) -> str | None:
    """What a column keeps: a ``Said`` as JSON, any other text as it is."""
    if isinstance(text, Said):
        return json.dumps(text.as_json(), ensure_ascii=False, separators=(",", ":"))
    return text


def loaded(value: str | None) -> str | None:
    """A column's text back: a ``Said`` where one was stored."""
    if isinstance(value, str) and value.startswith(_MARK):
        try:
            return _rebuilt(json.loads(value))
        except (ValueError, KeyError, TypeError, AttributeError):
            pass
    return value


def of_error(exc: BaseException) -> str:
    """An error's message to store: a ``Said`` when it was raised with a message id."""
    if isinstance(exc, TingjiError) and exc.template is not None:
        return Said(exc.template, **exc.params)
    if len(exc.args) == 1 and isinstance(exc.args[0], Said):
        return exc.args[0]
    return str(exc)
