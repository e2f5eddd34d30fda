"""The admin area: the System page (models, disk, version, job queue) and user accounts.

GET  /system                      (with the update status when running from an install root)
GET  /admin/vocabulary            dialect profiles and the glossary
POST /admin/glossary              POST /admin/glossary/{id}/delete
GET  /admin/users                 POST /admin/users              (create)
POST /admin/users/{id}/role       POST /admin/users/{id}/password (reset; ends their sessions)
POST /admin/users/{id}/delete     POST /api/jobs/{id}/cancel
"""

from __future__ import annotations

import shutil
import time
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse

import device
from device import egress, encryption, tls
from device.accounts import check_new_password, hash_password
from device.audit import public_hex
from device.errors import N_, InvalidInput
from device.profiles import load_profiles
from device.records import ROLES
from device.settings import PROJECT_ROOT
from device.vault import VaultError, WrongSecretError
from models.store import load_manifest, status
from web.deps import ROW_ID_MAX, Admin, Refused, RowId, SettingsDep, StoreDep, templates
from web.i18n import say
from web.routers import retention

router = APIRouter()
FormStr = Annotated[str, Form()]


@router.get("/system")
def system_page(request: Request, user: Admin, store: StoreDep, settings: SettingsDep):
    return _system_page(request, store, settings)


def _system_page(request: Request, store, settings, tls_error: str | None = None,
                 status_code: int = 200, key_error: str | None = None):
    manifest = load_manifest(models_dir=settings.models_dir)
    models = [{"id": spec.id, "kind": spec.kind, "size": spec.size, "default": spec.default,
               "status": status(spec, settings.models_dir, quick=True),
               "in_use": spec.id in (settings.asr_model, settings.summary_model)}
              for spec in manifest.values()]
    disk = shutil.disk_usage(settings.data_dir)
    return templates(request).TemplateResponse(request, "system.html", {
        "models": models, "disk": disk, "version": device.__version__,
        "schema_version": store.schema_version, "jobs": store.list_jobs(limit=50),
        "recordings": store.count_recordings(), "data_dir": settings.data_dir.resolve(),
        "deletions": store.deletions(limit=50),
        "updates": update_status(), "egress": egress.attempts(),
        "egress_watched": egress.installed(),
        "audit_key": public_hex(request.app.state.auditor.key),
        "tls": tls.current(settings) if tls.serves_others(settings) else None,
        "tls_error": tls_error,
        "encryption": ("off" if not encryption.enabled(settings)
                       else "locked" if encryption.locked(settings) else "unlocked"),
        "waiting": store.count_recordings() if store.waiting else 0,
        "key_error": key_error, "retention": retention.overview(store, settings)},
        status_code=status_code)


UNLOCK_TRIES = 5
UNLOCK_WINDOW_S = 15 * 60


def _wrong_secret(request: Request) -> None:
    request.app.state.unlock_failures.append(time.monotonic())


def _refuse_if_guessing(request: Request) -> None:
    """429 after UNLOCK_TRIES wrong passphrases or recovery keys in UNLOCK_WINDOW_S."""
    failures = request.app.state.unlock_failures
    while failures and time.monotonic() - failures[0] > UNLOCK_WINDOW_S:
        failures.popleft()
    if len(failures) >= UNLOCK_TRIES:
        wait = UNLOCK_WINDOW_S - (time.monotonic() - failures[0])
        raise Refused(429, N_("%(tries)d wrong tries: try again in %(minutes)d min"),
                      tries=len(failures), minutes=max(1, round(wait / 60)))


@router.post("/admin/unlock")
def unlock_box(request: Request, user: Admin, store: StoreDep, settings: SettingsDep,
               passphrase: Annotated[str, Form(max_length=1000)] = "",
               recovery: Annotated[str, Form(max_length=200)] = "",
               new_passphrase: Annotated[str, Form(max_length=1000)] = ""):
    """Unlock with the passphrase, or with the recovery key and a new passphrase (which
    replaces the forgotten one: the box key is wrapped again, nothing else changes)."""
    if not encryption.enabled(settings):
        raise Refused(409, N_("this box has no key: storage is in the clear"))
    _refuse_if_guessing(request)
    try:
        if recovery:
            if len(new_passphrase) < 8:
                return _system_page(request, store, settings, status_code=400,
                                    key_error=say(request, N_(
                                        "with the recovery key, choose a new passphrase of "
                                        "at least 8 characters")))
            encryption.recover(settings, recovery, new_passphrase)
        else:
            encryption.unlock_box(settings, passphrase=passphrase)
    except WrongSecretError:
        _wrong_secret(request)
        return _system_page(request, store, settings, status_code=400,
                            key_error=say(request, N_("wrong passphrase") if not recovery
                                          else N_("wrong recovery key")))
    return RedirectResponse("/system#encryption", status_code=303)


@router.post("/admin/lock")
def lock_box(user: Admin, settings: SettingsDep):
    encryption.lock_box(settings)
    return RedirectResponse("/system#encryption", status_code=303)


@router.post("/admin/passphrase")
def change_passphrase(request: Request, user: Admin, store: StoreDep, settings: SettingsDep,
                      current: Annotated[str, Form(max_length=1000)],
                      new: Annotated[str, Form(max_length=1000)]):
    """A new unlock passphrase: the box key is wrapped again; no data is encrypted again."""
    if not encryption.enabled(settings):
        raise Refused(409, N_("this box has no key: storage is in the clear"))
    _refuse_if_guessing(request)
    try:
        encryption.change_passphrase(settings, current, new)
    except WrongSecretError:
        _wrong_secret(request)
        return _system_page(request, store, settings, status_code=400,
                            key_error=say(request, N_("wrong current passphrase")))
    except VaultError as exc:
        return _system_page(request, store, settings, status_code=400,
                            key_error=say(request, exc))
    return RedirectResponse("/system#encryption", status_code=303)


@router.post("/admin/tls")
def install_certificate(request: Request, user: Admin, store: StoreDep, settings: SettingsDep,
                        cert: FormStr, key: FormStr):
    """The organisation's certificate chain and key, pasted as PEM: checked, then served."""
    try:
        tls.install(settings, cert.encode(), key.encode())
    except tls.TlsError as exc:
        return _system_page(request, store, settings, f"not installed: {exc}", 400)
    _reload_tls(request)
    return RedirectResponse("/system#tls", status_code=303)


@router.post("/admin/tls/rollback")
def rollback_certificate(request: Request, user: Admin, store: StoreDep,
                         settings: SettingsDep):
    try:
        tls.rollback(settings)
    except tls.TlsError as exc:
        return _system_page(request, store, settings, say(request, exc), 400)
    _reload_tls(request)
    return RedirectResponse("/system#tls", status_code=303)


def _reload_tls(request: Request) -> None:
    reload = getattr(request.app.state, "reload_tls", None)
    if reload is not None:  # serving HTTPS: new connections get the new certificate
        reload()


def update_status() -> dict | None:
    """The A/B slots' state when this code runs from an install root's slot
    (ROOT/slots/X/code), else None (a development checkout)."""
    slots = PROJECT_ROOT.parent.parent
    if slots.name != "slots" or not (slots.parent / "current").is_symlink():
        return None
    from updates.box import Box
    from updates.slots import status as slots_status

    return slots_status(Box(slots.parent))


def _vocabulary_page(request: Request, store, settings, error: str | None = None,
                     status_code: int = 200):
    return templates(request).TemplateResponse(request, "vocabulary.html", {
        "profiles": sorted(load_profiles(settings.data_dir).values(), key=lambda p: p.name),
        "glossary": store.glossary(), "error": error}, status_code=status_code)


@router.get("/admin/vocabulary")
def vocabulary(request: Request, user: Admin, store: StoreDep, settings: SettingsDep):
    return _vocabulary_page(request, store, settings)


@router.post("/admin/glossary")
def add_glossary(request: Request, user: Admin, store: StoreDep, settings: SettingsDep,
                 term: FormStr, misheard: Annotated[str, Form()] = ""):
    try:
        store.add_glossary(term, misheard or None)
    except InvalidInput as exc:
        return _vocabulary_page(request, store, settings, say(request, exc), 400)
    return RedirectResponse("/admin/vocabulary", status_code=303)


@router.post("/admin/glossary/{entry_id}/delete")
def remove_glossary(entry_id: RowId, user: Admin, store: StoreDep):
    if not store.remove_glossary(entry_id):
        raise Refused(404, N_("no glossary entry with id %(id)s"), id=entry_id)
    return RedirectResponse("/admin/vocabulary", status_code=303)


@router.post("/api/jobs/{job_id}/cancel")
def cancel_job(job_id: RowId, user: Admin, store: StoreDep):
    return {"cancelled": store.cancel_job(job_id)}


def _users_page(request: Request, store, error: str | None = None, status_code: int = 200,
                added: int | None = None):
    """``added``: the account just created, confirmed at the top of the page."""
    users = store.list_users()
    return templates(request).TemplateResponse(request, "users.html", {
        "users": users, "roles": ROLES, "error": error,
        "added": next((u for u in users if u.id == added), None)}, status_code=status_code)


@router.get("/admin/users")
def users(request: Request, user: Admin, store: StoreDep,
          added: Annotated[int | None, Query(ge=1, le=ROW_ID_MAX)] = None):
    return _users_page(request, store, added=added)


@router.post("/admin/users")
def create_user(request: Request, user: Admin, store: StoreDep, username: FormStr,
                password: FormStr, role: FormStr):
    try:
        if role not in ROLES:
            raise InvalidInput(N_("unknown role %(role)s"), role=repr(role))
        if not username.strip():
            raise InvalidInput(N_("choose a user name"))
        check_new_password(password)
        created = store.create_user(username.strip(), hash_password(password), role)
    except InvalidInput as exc:
        return _users_page(request, store, say(request, exc), 400)
    return RedirectResponse(f"/admin/users?added={created.id}", status_code=303)


def _other_user(store, admin, user_id: int):
    target = store.get_user(user_id)
    if target.id == admin.id:
        raise Refused(400, N_("change your own account on the Account page"))
    return target


@router.post("/admin/users/{user_id}/role")
def set_role(user_id: RowId, user: Admin, store: StoreDep, role: FormStr):
    target = _other_user(store, user, user_id)
    if role not in ROLES:
        raise Refused(400, N_("unknown role %(role)s"), role=repr(role))
    store.update_user(target.id, role=role)
    store.end_sessions(target.id)
    return RedirectResponse("/admin/users", status_code=303)


@router.post("/admin/users/{user_id}/password")
def reset_password(request: Request, user_id: RowId, user: Admin, store: StoreDep,
                   password: FormStr):
    target = _other_user(store, user, user_id)
    try:
        check_new_password(password)
    except InvalidInput as exc:
        return _users_page(request, store, say(request, exc), 400)
    store.update_user(target.id, password_hash=hash_password(password))
    store.end_sessions(target.id)
    return RedirectResponse("/admin/users", status_code=303)


@router.post("/admin/users/{user_id}/delete")
def delete_user(user_id: RowId, user: Admin, store: StoreDep):
    target = _other_user(store, user, user_id)
    store.delete_user(target.id)
    return RedirectResponse("/admin/users", status_code=303)
