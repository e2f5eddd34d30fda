"""The box's TLS certificate: its own, made at first start, or one from the organisation's CA.

When the web UI serves more than this machine's loopback (``host`` other than 127.0.0.1,
::1 or localhost) it speaks HTTPS only.  The first start makes an ECDSA P-256 key and a
self-signed certificate naming the host name, ``<name>.local``, every local IP address and
the configured host, valid 825 days; it is made again 30 days before it expires.  The
SHA-256 fingerprint is printed on the console and shown on the System page, so a reviewer
can compare it on the first visit.

An admin may install the organisation's own certificate (``python -m device tls install
CERT KEY`` or the System page): the chain must parse, the key match, nothing be expired and
the certificate name the host; the pair in use is kept as the previous one for rollback.

Files (``data/tls/``): ``cert.pem`` (the chain), ``key.pem`` (0600), ``origin`` (``self``
or ``installed``), and ``previous/`` with the pair before.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from device.audio import durable_file
from device.errors import N_, TingjiError
from device.settings import Settings

VALID_DAYS = 825
RENEW_DAYS = 30
LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}


class TlsError(TingjiError):
    """A certificate or key that cannot be used (the reason says why)."""


def serves_others(settings: Settings) -> bool:
    """Whether the web UI is reachable beyond this machine's loopback default: then TLS."""
    return settings.host not in LOOPBACK_HOSTS


def folder(settings: Settings) -> Path:
    return settings.data_dir / "tls"


@dataclass(frozen=True)
class Certificate:
    cert_file: Path
    key_file: Path
    fingerprint: str
    """SHA-256 of the leaf, as AB:CD:…"""
    not_after: dt.datetime
    names: tuple[str, ...]
    origin: str
    """self (made by the box) or installed (the organisation's)."""


def fingerprint(cert: x509.Certificate) -> str:
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def local_names(settings: Settings) -> tuple[list[str], list[ipaddress._BaseAddress]]:
    """The names and addresses the box answers to, found without asking any other machine
    (the interfaces' own addresses; no name lookups)."""
    import psutil

    host = socket.gethostname()
    names = [host, f"{host.split('.')[0]}.local", "localhost"]
    addresses: list[ipaddress._BaseAddress] = [ipaddress.ip_address("127.0.0.1"),
                                               ipaddress.ip_address("::1")]
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            if entry.family in (socket.AF_INET, socket.AF_INET6):
                try:
                    addresses.append(ipaddress.ip_address(entry.address.split("%")[0]))
                except ValueError:
                    continue
    try:
        configured = ipaddress.ip_address(settings.host)
        if not configured.is_unspecified:
            addresses.append(configured)
    except ValueError:
        names.append(settings.host)
    return list(dict.fromkeys(names)), list(dict.fromkeys(addresses))


def _write_private(path: Path, data: bytes) -> None:
    with durable_file(path, mode=0o600) as out:
        out.write(data)


def make_self_signed(settings: Settings, now: dt.datetime | None = None) -> Certificate:
    now = now or dt.datetime.now(dt.UTC)
    names, addresses = local_names(settings)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64]),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tingji box")])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName(n) for n in names] + [x509.IPAddress(a) for a in addresses]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    _store(settings, cert.public_bytes(serialization.Encoding.PEM),
           key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()), "self")
    return current(settings)


def _store(settings: Settings, chain: bytes, key: bytes, origin: str) -> None:
    """Make the pair the one in use; the pair before it goes to previous/."""
    where = folder(settings)
    where.mkdir(parents=True, exist_ok=True, mode=0o700)
    if (where / "cert.pem").exists():
        previous = where / "previous"
        previous.mkdir(exist_ok=True, mode=0o700)
        for name in ("cert.pem", "key.pem", "origin"):
            if (where / name).exists():
                shutil.copy2(where / name, previous / name)
    _write_private(where / "key.pem", key)
    _write_private(where / "cert.pem", chain)
    _write_private(where / "origin", origin.encode())


def current(settings: Settings) -> Certificate | None:
    where = folder(settings)
    if not (where / "cert.pem").exists() or not (where / "key.pem").exists():
        return None
    leaf = x509.load_pem_x509_certificates((where / "cert.pem").read_bytes())[0]
    origin = (where / "origin").read_text().strip() if (where / "origin").exists() else "self"
    return Certificate(where / "cert.pem", where / "key.pem", fingerprint(leaf),
                       leaf.not_valid_after_utc, _names(leaf), origin)


def _san(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def _names(cert: x509.Certificate) -> tuple[str, ...]:
    san = _san(cert)
    if san is None:
        return ()
    return tuple([*san.get_values_for_type(x509.DNSName),
                  *(str(a) for a in san.get_values_for_type(x509.IPAddress))])


def ensure(settings: Settings, now: dt.datetime | None = None) -> Certificate:
    """The certificate to serve with: the box's own is made, or made again within
    ``RENEW_DAYS`` of its end; an installed one is kept (it is the admin's to renew)."""
    now = now or dt.datetime.now(dt.UTC)
    cert = current(settings)
    if cert is None or (cert.origin == "self"
                        and cert.not_after - now < dt.timedelta(days=RENEW_DAYS)):
        return make_self_signed(settings, now)
    return cert


def install(settings: Settings, chain_pem: bytes, key_pem: bytes,
            now: dt.datetime | None = None) -> Certificate:
    """Check an organisation's certificate chain and key, then use them (the pair in use
    becomes the previous one)."""
    check(settings, chain_pem, key_pem, now)
    _store(settings, chain_pem, key_pem, "installed")
    return current(settings)


def rollback(settings: Settings) -> Certificate:
    """Serve the previous pair again (the current one becomes the previous)."""
    previous = folder(settings) / "previous"
    if not (previous / "cert.pem").exists():
        raise TlsError(N_("there is no previous certificate to return to"))
    chain, key = (previous / "cert.pem").read_bytes(), (previous / "key.pem").read_bytes()
    origin = (previous / "origin").read_text() if (previous / "origin").exists() else "self"
    _store(settings, chain, key, origin)
    return current(settings)


def check(settings: Settings, chain_pem: bytes, key_pem: bytes,
          now: dt.datetime | None = None) -> None:
    """TlsError with the reason when the pair cannot serve this box."""
    now = now or dt.datetime.now(dt.UTC)
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError:
        raise TlsError(N_("the certificate file is not a PEM certificate chain")) from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise TlsError(N_("the key file is not an unencrypted PEM private key")) from None
    leaf = chain[0]
    same = serialization.PublicFormat.SubjectPublicKeyInfo
    if (key.public_key().public_bytes(serialization.Encoding.DER, same)
            != leaf.public_key().public_bytes(serialization.Encoding.DER, same)):
        raise TlsError(N_("the key does not match the certificate"))
    for cert in chain:
        if now > cert.not_valid_after_utc:
            raise TlsError(f"{_subject(cert)} expired on {cert.not_valid_after_utc:%Y-%m-%d}")
        if now < cert.not_valid_before_utc:
            raise TlsError(f"{_subject(cert)} is valid only from "
                           f"{cert.not_valid_before_utc:%Y-%m-%d}")
    for child, parent in zip(chain, chain[1:], strict=False):
        try:
            child.verify_directly_issued_by(parent)
        except (InvalidSignature, ValueError, TypeError) as exc:
            raise TlsError(f"{_subject(child)} is not issued by the next certificate in "
                           f"the chain ({_subject(parent)}): {type(exc).__name__}") from None
    wanted = _wanted_names(settings)
    if not any(covers(leaf, name) for name in wanted):
        raise TlsError(f"the certificate names {', '.join(_names(leaf)) or 'no host'}, not "
                       f"this box ({', '.join(wanted)})")


def _wanted_names(settings: Settings) -> list[str]:
    if settings.host in ("0.0.0.0", "::"):
        names, addresses = local_names(settings)
        return [n for n in names if n != "localhost"] + [
            str(a) for a in addresses if not a.is_loopback]
    return [settings.host]


def covers(cert: x509.Certificate, name: str) -> bool:
    """Whether the certificate's names include ``name`` (a host name, with wildcards, or an
    address)."""
    san = _san(cert)
    if san is None:
        return False
    try:
        address = ipaddress.ip_address(name)
        return address in san.get_values_for_type(x509.IPAddress)
    except ValueError:
        pass
    name = name.lower().rstrip(".")
    for pattern in san.get_values_for_type(x509.DNSName):
        pattern = pattern.lower().rstrip(".")
        if pattern == name or (pattern.startswith("*.") and "." in name
                               and name.split(".", 1)[1] == pattern[2:]):
            return True
    return False


def _subject(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return f"the certificate of {names[0].value}" if names else "a certificate"
