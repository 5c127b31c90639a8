"""The TLS certificates Core Lightning keeps in `<lightning-dir>/<network>/`, made as cln-grpc does.

cln-grpc (`plugins/grpc-plugin/src/tls.rs`) makes, once, a CA (`ca.pem`, `ca-key.pem`, "cln
Root CA") and a server and a client certificate signed by it, ECDSA P-256, each naming only
"cln" and "localhost"; CLNRest reuses them when they are there (on Umbrel both plugins run).
So the server certificate does not name the address a client dials: the client must check it
against the CA and accept the name "cln" (apps/wallet/backends/clnrest.py does).
"""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey as PrivateKey
from cryptography.x509.oid import NameOID

NAMES = ("cln", "localhost")


def ensure(directory: Path) -> None:
    """Make the CA, server and client certificates unless they are there (cln-grpc's way)."""
    if all((directory / f"{name}.pem").exists() for name in ("ca", "server", "client")):
        return
    ca_key, ca = make_ca(directory, "cln Root CA")
    for filename, common_name in (("server", "cln grpc Server"), ("client", "cln grpc Client")):
        make_signed(directory, filename, common_name, ca_key, ca)


def make_ca(directory: Path, common_name: str) -> tuple[PrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    certificate = (
        _builder(subject, subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(directory, "ca", key, certificate)
    return key, certificate


def make_signed(
    directory: Path,
    filename: str,
    common_name: str,
    ca_key: PrivateKey,
    ca: x509.Certificate,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    certificate = (
        _builder(subject, ca.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=False), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(directory, filename, key, certificate)


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(datetime.datetime(4096, 1, 1, tzinfo=datetime.UTC))  # rcgen's default
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name) for name in NAMES]), critical=False
        )
    )


def _usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=not cert_sign,
        data_encipherment=False,
        key_agreement=not cert_sign,
        key_cert_sign=cert_sign,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _write(directory: Path, filename: str, key: PrivateKey, certificate: x509.Certificate) -> None:
    key_file = directory / f"{filename}-key.pem"
    key_file.touch(mode=0o600)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    (directory / f"{filename}.pem").write_bytes(pem)
