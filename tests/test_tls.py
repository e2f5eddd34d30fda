"""HTTPS on the LAN: the box's own certificate, the organisation's checked before use, the
headers every page carries, and the appliance itself over a real TLS connection."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import signal
import socket
import ssl
import subprocess
import sys

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from device import tls
from device.settings import PROJECT_ROOT

NOW = dt.datetime.now(dt.UTC)


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(subject_key, name: str, issuer_key=None, issuer_name: str | None = None, *,
          ca: bool = False, sans=(), days=(-1, 90)) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name or name)])
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
               .public_key(subject_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(NOW + dt.timedelta(days=days[0]))
               .not_valid_after(NOW + dt.timedelta(days=days[1]))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(issuer_key or subject_key, hashes.SHA256())


def _chain(*certs) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


@pytest.fixture
def box(settings):
    from tests.webutil import make_box

    return make_box(settings)


@pytest.fixture
def organisation():
    """The organisation's CA and a certificate it issued for the box at 10.9.9.9."""
    ca_key, leaf_key = _key(), _key()
    ca = _cert(ca_key, "Example Corp CA", ca=True, days=(-10, 3650))
    leaf = _cert(leaf_key, "tingji.example.corp", ca_key, "Example Corp CA",
                 sans=[x509.DNSName("tingji.example.corp"),
                       x509.IPAddress(ipaddress.ip_address("10.9.9.9"))])
    return {"ca_key": ca_key, "ca": ca, "leaf_key": leaf_key, "leaf": leaf}


def test_the_box_makes_its_own_certificate_and_renews_it_before_it_ends(settings):
    lan = settings.replace(host="0.0.0.0")
    assert tls.serves_others(lan) and not tls.serves_others(settings)
    cert = tls.ensure(lan)
    leaf = x509.load_pem_x509_certificate(cert.cert_file.read_bytes())
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
    assert leaf.public_key().curve.name == "secp256r1"
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days <= tls.VALID_DAYS
    host = socket.gethostname()
    assert {host, f"{host.split('.')[0]}.local", "127.0.0.1"} <= set(cert.names)
    assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", cert.fingerprint)
    assert oct(cert.key_file.stat().st_mode & 0o777) == "0o600"
    assert tls.ensure(lan).fingerprint == cert.fingerprint  # kept while it is young
    later = cert.not_after - dt.timedelta(days=tls.RENEW_DAYS - 1)
    renewed = tls.ensure(lan, now=later)
    assert renewed.fingerprint != cert.fingerprint and renewed.not_after > cert.not_after
    # a configured address is named too
    assert "10.9.9.9" in tls.make_self_signed(settings.replace(host="10.9.9.9")).names


def test_the_organisations_certificate_is_checked_before_use(settings, organisation):
    box = settings.replace(host="10.9.9.9")
    own = tls.ensure(box)
    o = organisation
    chain, key = _chain(o["leaf"], o["ca"]), _pem(o["leaf_key"])
    refused = {
        "the certificate file is not a PEM certificate chain": (b"not a certificate", key),
        "not an unencrypted PEM private key": (chain, b"-----BEGIN nonsense"),
        "the key does not match the certificate": (chain, _pem(_key())),
        "expired on": (_chain(_cert(o["leaf_key"], "old", o["ca_key"], "Example Corp CA",
                                    sans=[x509.IPAddress(ipaddress.ip_address("10.9.9.9"))],
                                    days=(-400, -35)), o["ca"]), key),
        "is not issued by the next certificate": (_chain(o["leaf"], _cert(
            _key(), "Example Corp CA", ca=True)), key),
        "not this box (10.9.9.9)": (_chain(_cert(
            o["leaf_key"], "other", o["ca_key"], "Example Corp CA",
            sans=[x509.DNSName("other.example.corp")]), o["ca"]), key),
    }
    for reason, (bad_chain, bad_key) in refused.items():
        with pytest.raises(tls.TlsError, match=re.escape(reason)):
            tls.install(box, bad_chain, bad_key)
        assert tls.current(box).fingerprint == own.fingerprint  # unchanged
    installed = tls.install(box, chain, key)
    assert installed.origin == "installed" and "tingji.example.corp" in installed.names
    assert tls.ensure(box, now=installed.not_after - dt.timedelta(days=1)).origin == "installed"
    back = tls.rollback(box)  # the box's own pair was kept
    assert back.fingerprint == own.fingerprint and back.origin == "self"


def test_pages_carry_the_security_headers_and_https_cookies_are_secure(box):
    from fastapi.testclient import TestClient

    from tests.webutil import stored_transcript

    rec = stored_transcript(box.settings)
    page = box.reviewer.client.get(f"/recordings/{rec}")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-store"
    assert "strict-transport-security" not in page.headers  # plain HTTP on loopback
    assert not re.search(r"<script>|\son[a-z]+=", page.text)  # no inline script at all
    for url in (f"/api/recordings/{rec}", f"/recordings/{rec}/export.txt"):
        assert box.reviewer.client.get(url).headers["cache-control"] == "no-store", url
    secure = TestClient(box.app, base_url="https://testserver")
    login = secure.get("/login")
    assert "secure" in login.headers["set-cookie"].lower()
    assert login.headers["strict-transport-security"].startswith("max-age=")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_appliance_serves_the_lan_over_https_only(settings, organisation, tmp_path):
    from tests.conftest import wait_until
    from tests.webutil import create_account, sign_in

    create_account(settings, "admin")
    port, redirect = _free_port(), _free_port()
    env = {**os.environ, "TINGJI_DATA_DIR": str(settings.data_dir),
           "TINGJI_MODELS_DIR": str(settings.models_dir), "TINGJI_HOST": "127.0.0.2",
           "TINGJI_PORT": str(port), "TINGJI_REDIRECT_PORT": str(redirect)}
    log = tmp_path / "run.log"
    appliance = subprocess.Popen([sys.executable, "-m", "device", "run"], cwd=PROJECT_ROOT,
                                 env=env, stdin=subprocess.DEVNULL, stdout=open(log, "wb"),
                                 stderr=subprocess.STDOUT)
    try:
        printed = wait_until(lambda: re.search(r"fingerprint: ([0-9A-F:]{95})",
                                               log.read_text()), 60, "the fingerprint")
        cert = tls.current(settings)
        assert printed.group(1) == cert.fingerprint and "127.0.0.2" in cert.names
        trust = ssl.create_default_context(cafile=str(cert.cert_file))  # the only anchor
        base = f"https://127.0.0.2:{port}"
        wait_until(lambda: httpx.get(f"{base}/health", verify=trust).status_code == 200, 60,
                   "/health over HTTPS", ignore=(httpx.HTTPError,))
        # plain HTTP on the HTTPS port gets no page
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.2:{port}/login", timeout=5)
        # the redirect port answers only with the way to HTTPS
        moved = httpx.get(f"http://127.0.0.2:{redirect}/recordings/3?x=1", timeout=5)
        assert moved.status_code == 308 and moved.content == b""
        assert moved.headers["location"] == f"https://127.0.0.2:{port}/recordings/3?x=1"
        with httpx.Client(base_url=base, verify=trust, timeout=30) as client:
            page = client.get("/login")
            assert page.headers["strict-transport-security"].startswith("max-age=")
            assert "secure" in page.headers["set-cookie"].lower()
            csrf = sign_in(client, "admin")
            assert cert.fingerprint in client.get("/system").text
            # the organisation's certificate, installed on the System page, serves new
            # connections at once; a bad one is refused and changes nothing
            o = organisation
            ca_leaf = _cert(o["leaf_key"], "box", o["ca_key"], "Example Corp CA",
                            sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.2"))])
            bad = client.post("/admin/tls", data={"csrf_token": csrf, "cert": "nonsense",
                                                  "key": "nonsense"})
            assert bad.status_code == 400 and "not a PEM certificate" in bad.text
            done = client.post("/admin/tls", data={
                "csrf_token": csrf, "cert": _chain(ca_leaf, o["ca"]).decode(),
                "key": _pem(o["leaf_key"]).decode()}, follow_redirects=False)
            assert done.status_code == 303
        ca_trust = ssl.create_default_context(
            cadata=o["ca"].public_bytes(serialization.Encoding.PEM).decode())
        assert httpx.get(f"{base}/health", verify=ca_trust).status_code == 200
        with pytest.raises(httpx.HTTPError):  # the box's own certificate is gone
            httpx.get(f"{base}/health", verify=trust)
    finally:
        appliance.send_signal(signal.SIGTERM)
        appliance.wait(30)
