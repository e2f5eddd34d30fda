"""The long-running processes: the worker, the web UI, and both together."""

from __future__ import annotations

import argparse
import functools
import signal
import subprocess
import sys
import threading
import time

from device.jobs import Worker
from device.libc import die_with_parent
from device.settings import Settings


def stop_on_signals() -> threading.Event:
    """An event SIGTERM and SIGINT set.

    Python runs a signal handler in the main thread between two bytecodes: inside the
    event's own ``set()`` when a second signal follows the first (`make run` stopping
    terminates its worker, and the kernel signals the worker again as the parent dies).
    Setting the event there again waited for the lock the main thread held, for ever, and
    left the worker running; a thread of its own sets it instead.
    """
    stop = threading.Event()

    def handler(signum, frame) -> None:
        threading.Thread(target=stop.set, daemon=True).start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)
    return stop


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    Worker(settings).serve(stop_on_signals())
    return 0


def _serve(settings: Settings) -> None:
    """The web UI, until stopped: HTTPS only when it serves more than loopback.  No Server
    header: it would tell anyone what to attack."""
    import uvicorn

    from device import tls
    from web.app import create_app

    app = create_app(settings)
    options = {}
    if tls.serves_others(settings):
        cert = tls.ensure(settings)
        print(f"tingji: HTTPS on https://{settings.host}:{settings.port}; the box's certificate "
              f"SHA-256 fingerprint: {cert.fingerprint}", file=sys.stderr, flush=True)
        options = {"ssl_certfile": str(cert.cert_file), "ssl_keyfile": str(cert.key_file)}
    config = uvicorn.Config(app, host=settings.host, port=settings.port,
                            log_level=settings.log_level.lower(), server_header=False,
                            **options)
    server = uvicorn.Server(config)
    if options:
        config.load()  # the SSL context exists now: a new certificate is loaded into it
        app.state.reload_tls = functools.partial(_reload_tls, settings, config)
        threading.Thread(target=_renew_daily, args=(settings, config), daemon=True).start()
        if settings.redirect_port:
            _redirect_to_https(settings)
    server.run()


def _reload_tls(settings: Settings, config) -> None:
    """Serve the certificate now in data/tls/ to new connections."""
    from device import tls

    cert = tls.current(settings)
    config.ssl.load_cert_chain(str(cert.cert_file), str(cert.key_file))


def _renew_daily(settings: Settings, config) -> None:
    from device import tls

    served = tls.current(settings).fingerprint
    while True:
        time.sleep(24 * 3600)
        cert = tls.ensure(settings)  # made again 30 days before its end
        if cert.fingerprint != served:
            _reload_tls(settings, config)
            served = cert.fingerprint
            print(f"tingji: new certificate, SHA-256 fingerprint {served}", file=sys.stderr)


def _redirect_to_https(settings: Settings) -> None:
    """Plain HTTP on ``redirect_port`` that answers every request with a redirect to the
    same path over HTTPS, and nothing else."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Redirect(BaseHTTPRequestHandler):
        server_version, sys_version = "", ""

        def _answer(self) -> None:
            host = (self.headers.get("Host") or settings.host).rsplit(":", 1)[0]
            if not host.startswith("[") and ":" in host:
                host = f"[{host}]"
            path = self.path if self.path.startswith("/") else "/"
            self.send_response(308)
            self.send_header("Location", f"https://{host}:{settings.port}{path}")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer((settings.host, settings.redirect_port), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    # uvicorn re-raises SIGTERM/SIGINT after its own shutdown, so the finally below may not
    # run: the kernel also stops the worker when this process dies (PR_SET_PDEATHSIG).
    worker = subprocess.Popen([sys.executable, "-m", "device", "worker"],
                              preexec_fn=die_with_parent())
    try:
        from device.tls import serves_others

        scheme = "https" if serves_others(settings) else "http"
        print(f"tingji: web UI on {scheme}://{settings.host}:{settings.port}", file=sys.stderr)
        _serve(settings)
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
    return 0


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    _serve(settings)
    return 0
