"""The simulator's TLS material: a self-signed CA and a server certificate for 127.0.0.1.

There is no ``cryptography`` module here, so the ``openssl`` command line makes them, once
per process, in a private temporary directory removed at exit: an EC P-256 CA
(``basicConstraints=critical,CA:TRUE``) and a server certificate it signs, with
``subjectAltName = IP:127.0.0.1, DNS:localhost`` and ``extendedKeyUsage = serverAuth`` (what
Python's and urllib3's strict verification require). The CA's PEM is served at
``/_sim/tls-ca.pem``; a client trusts the simulator by pointing ``verify=`` /
``AWS_CA_BUNDLE`` at a copy of it.

:func:`is_tls_hello` tells a TLS ClientHello from plain HTTP by the first byte of a
connection (0x16, the TLS handshake record type), so one port serves both.
"""

from __future__ import annotations

import atexit
import shutil
import ssl
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

TLS_HANDSHAKE = 0x16  # first byte of every TLS record carrying a ClientHello
_DAYS = "30"


class TlsSetupError(RuntimeError):
    """openssl is missing or failed; the message says which step and why."""


@dataclass(frozen=True)
class TlsMaterial:
    directory: Path
    ca_pem: bytes
    ca_path: Path
    cert_path: Path
    key_path: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(self.cert_path), str(self.key_path))
        return context


_lock = threading.Lock()
_material: TlsMaterial | None = None


def _openssl(directory: Path, *args: str) -> None:
    try:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True,
                       stdin=subprocess.DEVNULL, timeout=60)
    except FileNotFoundError as exc:
        raise TlsSetupError("the simulator's TLS needs the openssl command "
                            "(apt-get install openssl)") from exc
    except subprocess.CalledProcessError as exc:
        stderr = exc.stderr.decode(errors="replace").strip()
        raise TlsSetupError(f"openssl {args[0]} failed: {stderr}") from exc


def _make(directory: Path) -> TlsMaterial:
    (directory / "ca.cnf").write_text(
        "[req]\ndistinguished_name=dn\nprompt=no\nx509_extensions=v3_ca\n"
        "[dn]\nCN=bacula-ec2 AWS simulator CA\n"
        "[v3_ca]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
        "subjectKeyIdentifier=hash\n")
    (directory / "server.ext").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "authorityKeyIdentifier=keyid,issuer\nsubjectKeyIdentifier=hash\n")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(directory, "req", "-x509", "-config", "ca.cnf", *ec, "-keyout", "ca.key",
             "-out", "ca.pem", "-days", _DAYS)
    _openssl(directory, "req", "-new", "-config", "ca.cnf", *ec, "-keyout", "server.key",
             "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    _openssl(directory, "x509", "-req", "-in", "server.csr", "-CA", "ca.pem",
             "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem", "-days", _DAYS,
             "-extfile", "server.ext")
    ca_path = directory / "ca.pem"
    return TlsMaterial(directory, ca_path.read_bytes(), ca_path, directory / "server.pem",
                       directory / "server.key")


def material() -> TlsMaterial:
    """This process's CA and server certificate (made on first use)."""
    global _material
    with _lock:
        if _material is None:
            directory = Path(tempfile.mkdtemp(prefix="aws-sim-tls-"))
            atexit.register(shutil.rmtree, directory, ignore_errors=True)
            _material = _make(directory)
        return _material


def is_tls_hello(first_byte: bytes) -> bool:
    return first_byte[:1] == bytes([TLS_HANDSHAKE])
