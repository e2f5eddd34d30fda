"""First-boot setup, sign in and out, password change.

GET/POST /setup      one-time: the code printed on the console creates the admin
GET/POST /login      rate-limited; 429 with Retry-After after repeated failures
POST     /logout     ends every session of the user
GET/POST /account    change password (ends every session, then signs in again)
POST     /account/language  the pages' language for this user (empty: the browser's)
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse

from device import encryption
from device.accounts import check_new_password, hash_password, signs_in, verify_password
from device.errors import N_, InvalidInput
from device.records import User
from web import security
from web.deps import Forbidden, Interviewer, SettingsDep, StoreDep, templates
from web.i18n import LANGUAGES, say

router = APIRouter()
FormStr = Annotated[str, Form()]


def _page(request: Request, name: str, context: dict, status: int = 200):
    """A sign-in form page, with a fresh double-submit CSRF cookie."""
    token = request.cookies.get(security.PRELOGIN_COOKIE) or secrets.token_urlsafe(24)
    response = templates(request).TemplateResponse(
        request, name, {**context, "csrf": token}, status_code=status)
    response.set_cookie(security.PRELOGIN_COOKIE, token, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    return response


def _check_prelogin(request: Request, given: str) -> None:
    if not security.same_token(request.cookies.get(security.PRELOGIN_COOKIE), given):
        raise Forbidden(N_("the form expired: reload the page and try again"))


def _signed_in(request: Request, store, user: User, target: str) -> RedirectResponse:
    """A new session (a new id at every sign-in) and the way on."""
    response = RedirectResponse(target if target.startswith("/") and not target.startswith("//")
                                else "/", status_code=303)
    response.set_cookie(security.SESSION_COOKIE, security.start_session(store, user),
                        max_age=security.SESSION_SECONDS, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    return response


@router.get("/setup")
def setup_form(request: Request):
    if request.app.state.setup_code is None:
        return RedirectResponse("/login", status_code=303)
    return _page(request, "setup.html", {"error": None})


@router.post("/setup")
def setup(request: Request, store: StoreDep, settings: SettingsDep, code: FormStr,
          username: FormStr, password: FormStr, csrf_token: FormStr,
          unlock_passphrase: Annotated[str, Form(max_length=1000)] = ""):
    """The first admin; with an unlock passphrase, also the box key (storage encrypted
    from the first recording on), whose recovery key the next page shows once."""
    _check_prelogin(request, csrf_token)
    expected = request.app.state.setup_code
    if expected is None:
        raise Forbidden(N_("setup is done: sign in"))
    try:
        if not security.same_token(expected, code.strip().upper()):
            raise InvalidInput(N_("wrong setup code (it is printed on the box's console)"))
        if not username.strip():
            raise InvalidInput(N_("choose a user name"))
        check_new_password(password)
        if unlock_passphrase and len(unlock_passphrase) < 8:
            raise InvalidInput(N_("the unlock passphrase needs at least 8 characters"))
        if unlock_passphrase and unlock_passphrase == password:
            raise InvalidInput(N_("choose an unlock passphrase other than the admin's password"))
    except InvalidInput as exc:
        return _page(request, "setup.html", {"error": say(request, exc), "username": username},
                     status=400)
    user = store.create_first_user(username.strip(), hash_password(password), "admin")
    request.app.state.setup_code = None
    if user is None:
        raise Forbidden(N_("setup is done: sign in"))
    _audit(request, store, "first_admin_created", user)
    if not unlock_passphrase or encryption.enabled(settings):
        return _signed_in(request, store, user, "/")
    recovery = encryption.init(settings, unlock_passphrase)
    encryption.unlock_box(settings, passphrase=unlock_passphrase)
    _audit(request, store, "keyring_created", user)
    shown = _signed_in(request, store, user, "/")
    page = templates(request).TemplateResponse(request, "recovery.html",
                                               {"recovery": recovery})
    page.headers.append("set-cookie", shown.headers["set-cookie"])
    return page


@router.get("/login")
def login_form(request: Request, next: str = "/"):
    if request.app.state.setup_code is not None:
        return RedirectResponse("/setup", status_code=303)
    return _page(request, "login.html", {"error": None, "next": next})


@router.post("/login")
def login(request: Request, store: StoreDep, username: FormStr, password: FormStr,
          csrf_token: FormStr, next: Annotated[str, Form()] = "/"):
    _check_prelogin(request, csrf_token)
    limiter: security.LoginLimiter = request.app.state.login_limiter
    client = request.client.host if request.client else "?"
    wait = limiter.retry_after(client, username)
    if wait:
        response = _page(request, "login.html", {
            "error": say(request, N_("too many failed attempts: try again in %(seconds)d s"),
                         seconds=int(wait) + 1), "next": next},
            status=429)
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    user = store.find_user(username.strip())
    if not signs_in(user, password):
        limiter.failed(client, username)
        _audit(request, store, "sign_in_failed", None, {"username": username.strip()[:64]})
        wrong = say(request, N_("wrong user name or password"))
        return _page(request, "login.html", {"error": wrong, "next": next,
                                             "username": username}, status=401)
    limiter.succeeded(client, username)
    _audit(request, store, "sign_in", user)
    return _signed_in(request, store, user, next)


def _audit(request: Request, store, action: str, user: User | None,
           details: dict | None = None) -> None:
    request.app.state.auditor.record(store, action, user=user, details=details,
                                     address=request.client.host if request.client else None)


@router.post("/logout")
def logout(request: Request, user: Interviewer, store: StoreDep):
    _audit(request, store, "sign_out", user)
    store.end_sessions(user.id)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(security.SESSION_COOKIE)
    return response


@router.get("/account")
def account(request: Request, user: Interviewer):
    return templates(request).TemplateResponse(request, "account.html",
                                               {"error": None})


@router.post("/account")
def change_password(request: Request, user: Interviewer, store: StoreDep,
                    current: FormStr, new: FormStr):
    try:
        if not verify_password(user.password_hash, current):
            raise InvalidInput(N_("the current password is wrong"))
        check_new_password(new)
    except InvalidInput as exc:
        return templates(request).TemplateResponse(
            request, "account.html", {"error": say(request, exc)}, status_code=400)
    store.update_user(user.id, password_hash=hash_password(new))
    store.end_sessions(user.id)  # every other device signs in again
    return _signed_in(request, store, user, "/account?changed=1")


@router.post("/account/language")
def set_language(user: Interviewer, store: StoreDep,
                 language: Annotated[str, Form(max_length=16)] = ""):
    if language and language not in LANGUAGES:
        raise InvalidInput(N_("unknown language %(language)s"), language=language)
    store.update_user(user.id, language=language or None)
    return RedirectResponse("/account", status_code=303)
