"""The pages' languages: Babel message catalogues, chosen per request.

The catalogues' sources are ``web/translations/<locale>/LC_MESSAGES/messages.po`` (English
message ids, so English needs no translation); ``make install`` compiles them to ``.mo``
(``python -m web.i18n compile``), and derives Traditional Chinese from the Simplified one
with OpenCC.  ``make messages`` extracts the strings of templates, Python and JavaScript
and merges them into the sources.

A request's language is the user's own choice (Account page), else the first language of
the browser's ``Accept-Language`` that the box has, else the box default (``ui_language``).

    >>> from_accept_language("en-GB,en;q=0.9,zh-CN;q=0.8")
    'en'
    >>> from_accept_language("zh-HK,zh;q=0.9")
    'zh-TW'
    >>> from_accept_language("fr, de;q=0.5")
"""

from __future__ import annotations

import functools
import sys
import zoneinfo
from datetime import datetime
from pathlib import Path

from babel import Locale
from babel.dates import get_date_format
from babel.messages.extract import extract_from_file
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations
from jinja2 import pass_context

from device.errors import N_
from device.said import Said, of_error

HERE = Path(__file__).parent
CATALOGUES = HERE / "translations"
DOMAIN = "messages"
LANGUAGES = {"zh-CN": "简体中文", "zh-TW": "繁體中文", "en": "English"}
"""The pages' languages, as HTML and HTTP name them, with their names in themselves."""
SOURCES = ("zh-CN", "en")
"""Languages with a catalogue of their own; zh-TW is converted from zh-CN."""
WORDS = frozenset((
    # roles
    N_("interviewer"), N_("reviewer"), N_("admin"),
    # recordings' and jobs' states
    N_("recording"), N_("queued"), N_("transcribing"), N_("done"), N_("failed"),
    N_("interrupted"), N_("running"), N_("cancelled"),
    # jobs
    N_("transcribe"), N_("summarize"), N_("diarize"), N_("remember_voice"),
    # models
    N_("installed"), N_("missing"),
))
"""Words the database stores in English that pages show: the ``word`` filter says them in
the page's language (anything else as it is)."""


def babel_name(language: str) -> str:
    return language.replace("-", "_")


def from_accept_language(header: str | None) -> str | None:
    """The first language of an ``Accept-Language`` header the box has, or None."""
    ranked = []
    for position, part in enumerate((header or "").split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        if tag and quality > 0:
            ranked.append((-quality, position, tag.strip().lower()))
    for _, _, tag in sorted(ranked):
        if tag == "en" or tag.startswith("en-"):
            return "en"
        if tag == "zh" or tag.startswith("zh-"):
            traditional = any(mark in tag.split("-")[1:] for mark in ("tw", "hk", "mo", "hant"))
            return "zh-TW" if traditional else "zh-CN"
    return None


def language_of(request) -> str:
    """This request's language (remembered on the request once chosen)."""
    chosen = getattr(request.state, "language", None)
    if chosen:
        return chosen
    user = getattr(request.state, "user", None)
    language = getattr(user, "language", None)
    if language not in LANGUAGES:
        language = from_accept_language(request.headers.get("accept-language"))
    if language is None:
        language = request.app.state.settings.ui_language
    if getattr(request.state, "user", None) is not None:  # settled once the user is known
        request.state.language = language
    return language


class CataloguesMissing(RuntimeError):
    pass


@functools.cache
def translations(language: str) -> Translations:
    path = CATALOGUES / babel_name(language) / "LC_MESSAGES" / f"{DOMAIN}.mo"
    if not path.exists():
        raise CataloguesMissing(f"{path} is missing: `make install` compiles the catalogues")
    with path.open("rb") as stream:
        return Translations(stream, domain=DOMAIN)


def say(request, message, **params) -> str:
    """``message`` in the request's language: a message id (formatted with ``params``), or
    an error raised with a message id and its parameters (``device.errors``); other errors
    as they are."""
    if isinstance(message, BaseException):
        message = of_error(message)  # a Said when raised with a message id, else its text
    elif not isinstance(message, Said):
        message = Said(message, **params)
    return told(request, message)


def told(request, value: str | None) -> str | None:
    """Stored text (``device.said``) in the request's language; plain text as it is."""
    if isinstance(value, Said):
        return value.said(translations(language_of(request)).gettext)
    return value


def told_fields(request, record: dict, *keys: str) -> dict:
    """A record as JSON for a script, its stored texts ``keys`` in the request's language."""
    return {**record, **{key: told(request, record.get(key)) for key in keys}}


@pass_context
def template_gettext(context, message: str) -> str:
    return translations(language_of(context["request"])).gettext(message)


@pass_context
def template_ngettext(context, singular: str, plural: str, n: int) -> str:
    return translations(language_of(context["request"])).ngettext(singular, plural, n)


@pass_context
def script_catalogue(context) -> dict[str, str]:
    """The JavaScript's messages in the page's language, for ``_()`` in static/app.js (those
    said as written are left out)."""
    catalogue = translations(language_of(context["request"]))
    said = {message: catalogue.gettext(message) for message in script_messages()}
    return {message: text for message, text in said.items() if text != message}


@functools.cache
def script_messages() -> tuple[str, ...]:
    found = []
    for path in sorted((HERE / "static").glob("*.js")):
        found += [message for _, message, _, _ in extract_from_file("javascript", path)
                  if isinstance(message, str)]
    return tuple(dict.fromkeys(found))


def install(templates, settings) -> None:
    """Jinja2's i18n extension with this module's per-request catalogues, and the filters
    that write times and durations the way the page's language does."""
    env = templates.env
    env.add_extension("jinja2.ext.i18n")
    env.policies["ext.i18n.trimmed"] = True  # a {% trans %} block's line breaks are spaces
    env.install_gettext_callables(template_gettext, template_ngettext, newstyle=True)
    env.globals["script_catalogue"] = script_catalogue
    env.globals["language_of"] = language_of
    env.globals["languages"] = LANGUAGES

    @pass_context
    def when(context, stamp: str | None, seconds: bool = False) -> str:
        if not stamp:
            return ""
        moment = datetime.fromisoformat(stamp).astimezone(zoneinfo.ZoneInfo(settings.time_zone))
        pattern, locale = _long_date(language_of(context["request"]))
        clock = moment.strftime("%H:%M:%S %Z" if seconds else "%H:%M %Z")
        return f"{pattern.apply(moment, locale)} {clock}"

    @pass_context
    def duration(context, seconds: float | None) -> str:
        """1小时2分 / 1 h 2 min; under a minute in seconds."""
        total = int(max(seconds or 0.0, 0.0))
        hours, rest = divmod(total, 3600)
        minutes, secs = divmod(rest, 60)
        say_here = functools.partial(_say_in, language_of(context["request"]))
        if hours:
            return say_here(N_("%(hours)d h %(minutes)d min"), hours=hours, minutes=minutes)
        if minutes:
            return say_here(N_("%(minutes)d min %(seconds)d s"), minutes=minutes, seconds=secs)
        return say_here(N_("%(seconds)d s"), seconds=secs)

    @pass_context
    def word(context, value: str | None) -> str:
        if value not in WORDS:
            return value or ""
        return translations(language_of(context["request"])).gettext(value)

    @pass_context
    def said(context, value: str | None) -> str:
        return told(context["request"], value) or ""

    env.filters["said"] = said
    env.filters["word"] = word
    env.filters["local_time"] = when
    env.filters["duration"] = duration


@functools.cache
def _long_date(language: str):
    """Babel's long date pattern of a language (2026年12月1日, December 1, 2026), parsed once:
    a library page writes fifty dates."""
    locale = Locale.parse(babel_name(language))
    return get_date_format("long", locale=locale), locale


def _say_in(language: str, message: str, **params) -> str:
    return translations(language).gettext(message) % params


def compile_catalogues() -> list[Path]:
    """Compile every source catalogue to .mo, and Traditional Chinese from Simplified."""
    import opencc

    written = []
    for language in SOURCES:
        source = CATALOGUES / babel_name(language) / "LC_MESSAGES" / f"{DOMAIN}.po"
        with source.open("rb") as stream:
            catalogue = read_po(stream, locale=babel_name(language))
        written.append(_write(catalogue, language))
        if language == "zh-CN":
            convert = opencc.OpenCC("s2twp").convert
            for message in catalogue:
                if message.id and message.string:
                    message.string = (tuple(convert(s) for s in message.string)
                                      if isinstance(message.string, tuple | list)
                                      else convert(message.string))
            written.append(_write(catalogue, "zh-TW"))
    translations.cache_clear()
    return written


def _write(catalogue, language: str) -> Path:
    target = CATALOGUES / babel_name(language) / "LC_MESSAGES" / f"{DOMAIN}.mo"
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_suffix(".mo.tmp")
    with temporary.open("wb") as stream:
        write_mo(stream, catalogue)
    temporary.replace(target)
    return target


if __name__ == "__main__":
    if sys.argv[1:] != ["compile"]:
        sys.exit("usage: python -m web.i18n compile")
    for path in compile_catalogues():
        print(f"compiled {path.relative_to(HERE.parent)}")
