"""A throwaway CA, server and client certificate for testing TLS (cryptography or openssl)."""

from __future__ import annotations

import datetime
import importlib
import ipaddress
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import TLSUnavailableError

__all__ = ["DEFAULT_HOSTS", "TLSFiles", "make_certs"]

#: The names the server certificate is valid for, unless told others: loopback.
DEFAULT_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")

# A DNS name a certificate can carry: dotted labels of letters, digits and inner hyphens,
# the first one possibly "*" (a wildcard).
_DNS_NAME = re.compile(
    r"(\*|[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


@dataclass(frozen=True)
class TLSFiles:
    """The PEM files :func:`make_certs` wrote (private keys are readable by their owner only)."""

    #: the throwaway CA's certificate: what clients and servers trust (``--cacert``)
    ca: Path
    #: a server certificate signed by the CA, for ``hosts`` (also good as a client's)
    server_cert: Path
    server_key: Path
    #: a client certificate signed by the CA (CN ``grpc-etcd-client``), for mutual TLS
    client_cert: Path
    client_key: Path


def make_certs(
    directory: str | os.PathLike[str], *, hosts: Sequence[str] = DEFAULT_HOSTS
) -> TLSFiles:
    """Write a throwaway CA and two certificates it signed into ``directory`` (created if
    missing, mode 0700), for testing TLS and mutual TLS; return their paths.

    Files written: ``ca.crt`` (the CA's certificate, to trust), ``server.crt`` and
    ``server.key`` (valid for every name and IP address in ``hosts``; default ``localhost``,
    ``127.0.0.1`` and ``::1``), ``client.crt`` and ``client.key`` (a client certificate for
    mutual TLS). Keys are P-256, unencrypted, mode 0600; certificates are valid for 2 days.
    The ``openssl`` fallback (used when the ``cryptography`` package is missing) also leaves
    its ``ca.key`` and signing requests there. Not for production: anyone who reads the
    directory can sign.

        files = grpc_etcd.testing.make_certs(tmp_path / "tls")
        grpc.ssl_channel_credentials(files.ca.read_bytes())
    """
    if not hosts:
        raise ValueError("make_certs needs at least one host name or IP address")
    for host in hosts:
        if not (_is_ip(host) or _DNS_NAME.fullmatch(host)):
            raise ValueError(
                f"make_certs: {host!r} is neither an IP address nor a DNS name (dotted labels "
                "of letters, digits and hyphens)"
            )
    path = Path(directory)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    files = TLSFiles(
        *(path / n for n in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key"))
    )
    try:
        importlib.import_module("cryptography.x509")
    except ImportError:
        _certs_with_openssl(path, files, hosts)
    else:
        _certs_with_cryptography(files, hosts)
    return files


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _certs_with_cryptography(files: TLSFiles, hosts: Sequence[str]) -> None:
    x509: Any = importlib.import_module("cryptography.x509")
    oid: Any = importlib.import_module("cryptography.x509.oid")
    hashes: Any = importlib.import_module("cryptography.hazmat.primitives.hashes")
    ec: Any = importlib.import_module("cryptography.hazmat.primitives.asymmetric.ec")
    ser: Any = importlib.import_module("cryptography.hazmat.primitives.serialization")
    now = datetime.datetime.now(datetime.UTC)

    def cert(cn: str, key: Any, ca_key: Any, ca_cn: str, usage: list[Any] | None) -> Any:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(oid.NameOID.COMMON_NAME, cn)]))
            .issuer_name(x509.Name([x509.NameAttribute(oid.NameOID.COMMON_NAME, ca_cn)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=usage is None, path_length=None), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=usage is not None,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=usage is None,
                    crl_sign=usage is None,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
        )
        if usage is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.IPAddress(ipaddress.ip_address(h)) if _is_ip(h) else x509.DNSName(h)
                        for h in hosts
                    ]
                ),
                critical=False,
            )
        return builder.sign(ca_key, hashes.SHA256())

    def write(cert_path: Path, key_path: Path, crt: Any, key: Any) -> None:
        cert_path.write_bytes(crt.public_bytes(ser.Encoding.PEM))
        key_path.touch(mode=0o600)
        key_path.write_bytes(
            key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = cert("grpc-etcd test CA", ca_key, ca_key, "grpc-etcd test CA", None)
    files.ca.write_bytes(ca_cert.public_bytes(ser.Encoding.PEM))
    eku = oid.ExtendedKeyUsageOID
    for name, crt_path, key_path, usage in (
        (hosts[0], files.server_cert, files.server_key, [eku.SERVER_AUTH, eku.CLIENT_AUTH]),
        ("grpc-etcd-client", files.client_cert, files.client_key, [eku.CLIENT_AUTH]),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        write(crt_path, key_path, cert(name, key, ca_key, "grpc-etcd test CA", usage), key)


def _certs_with_openssl(directory: Path, files: TLSFiles, hosts: Sequence[str]) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise TLSUnavailableError(
            "make_certs (and EtcdServer(tls=...)) needs the `cryptography` package "
            "(pip install cryptography) or the `openssl` command; neither is available"
        )
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        # In the caller's directory: every path given is relative to it (or absolute).
        out = subprocess.run([openssl, *args], capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise TLSUnavailableError(f"openssl {' '.join(args)} failed: {out.stderr.strip()}")

    ca_key = directory / "ca.key"
    run(
        "req",
        "-x509",
        *newkey,
        "-keyout",
        str(ca_key),
        "-out",
        str(files.ca),
        "-days",
        "2",
        "-subj",
        "/CN=grpc-etcd test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    names = ",".join(f"IP:{h}" if _is_ip(h) else f"DNS:{h}" for h in hosts)
    for cn, crt, key, eku in (
        (hosts[0], files.server_cert, files.server_key, "serverAuth,clientAuth"),
        ("grpc-etcd-client", files.client_cert, files.client_key, "clientAuth"),
    ):
        ext = directory / f"{key.stem}.ext"
        ext.write_text(
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            f"extendedKeyUsage={eku}\n"
            f"subjectAltName={names}\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
        )
        csr = directory / f"{key.stem}.csr"
        run("req", "-new", *newkey, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={cn}")
        sign = [
            "-CA",
            str(files.ca),
            "-CAkey",
            str(ca_key),
            "-set_serial",
            str(secrets.randbits(63)),
        ]
        run(
            "x509",
            "-req",
            "-in",
            str(csr),
            *sign,
            "-days",
            "2",
            "-out",
            str(crt),
            "-extfile",
            str(ext),
        )
