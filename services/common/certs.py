"""The suite's certificate tool: one CA and one certificate per identity, for mutual TLS between services.

    python -m services.common.certs init --dir .data/certs         # CA + gateway, search, encoder, operator
    python -m services.common.certs issue bench --dir .data/certs  # one more identity

Files in DIR: `ca.crt`/`ca.key` (the suite CA) and `<identity>.crt`/`<identity>.key` per identity. Each
certificate names its identity as a SAN URI `spiffe://imagesearch/<identity>` (what the services authorise)
and as its CN, and holds DNS/IP SANs for localhost, 127.0.0.1 and the identity itself (a compose service
name), so one certificate serves as server and client certificate. `init` is idempotent: a valid CA and
valid identity certificates signed by it are kept; anything missing, expiring or foreign is (re)issued.
Re-running `issue NAME` renews that identity (how a certificate is rotated: services pick up their new
server certificate on the next handshake, see services/common/tls.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TRUST_DOMAIN = "imagesearch"
DEFAULT_IDENTITIES = ("gateway", "search", "encoder", "operator")
CA_DAYS = 3650
LEAF_DAYS = 365
# A certificate this close to expiry is renewed by `init`.
RENEW_BEFORE = dt.timedelta(days=30)


def spiffe_id(identity: str) -> str:
    return f"spiffe://{TRUST_DOMAIN}/{identity}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write(path: Path, data: bytes, private: bool = False) -> None:
    """Write atomically (a service reloading its files never sees half a file); keys are 0600."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    if private:
        os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _valid(cert_path: Path, issuer: x509.Certificate | None = None) -> bool:
    """Exists, parses, is not near expiry and (for a leaf) was signed by `issuer`."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if cert.not_valid_after_utc - _now() < RENEW_BEFORE:
            return False
        if issuer is not None:
            cert.verify_directly_issued_by(issuer)
        return True
    except (OSError, ValueError, TypeError, InvalidSignature):  # missing, damaged or another CA's
        return False


def ensure_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The suite CA in `directory`, created unless a valid one is there."""
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "ca.crt", directory / "ca.key"
    if _valid(cert_path) and key_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return x509.load_pem_x509_certificate(cert_path.read_bytes()), key
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{TRUST_DOMAIN} suite CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(key_path, _key_pem(key), private=True)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def issue(directory: Path, identity: str, days: int = LEAF_DAYS) -> Path:
    """Issue (or renew) `<identity>.crt`/`.key` signed by the suite CA; returns the certificate path."""
    if not identity.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"identity {identity!r}: use letters, digits, '-' and '_' only")
    ca_cert, ca_key = ensure_ca(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(spiffe_id(identity)),
        x509.DNSName("localhost"),
        x509.DNSName(identity),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    # Key first: a reader that sees the new certificate must find its key already in place.
    _write(directory / f"{identity}.key", _key_pem(key), private=True)
    cert_path = directory / f"{identity}.crt"
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path


def init(directory: Path, identities: tuple[str, ...] = DEFAULT_IDENTITIES) -> list[str]:
    """Make sure the CA and every identity's certificate exist and are valid; returns those (re)issued."""
    ca_cert, _ = ensure_ca(directory)
    issued = []
    for identity in identities:
        if not (_valid(directory / f"{identity}.crt", ca_cert) and (directory / f"{identity}.key").exists()):
            issue(directory, identity)
            issued.append(identity)
    return issued


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.common.certs", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_init = sub.add_parser("init", help="create the CA and the default identities (idempotent)")
    p_init.add_argument("--dir", type=Path, required=True)
    p_issue = sub.add_parser("issue", help="issue or renew one identity's certificate")
    p_issue.add_argument("name")
    p_issue.add_argument("--dir", type=Path, required=True)
    p_issue.add_argument("--days", type=int, default=LEAF_DAYS)
    args = parser.parse_args(argv)
    if args.command == "init":
        issued = init(args.dir)
        print(f"certs in {args.dir}: " + (f"issued {', '.join(issued)}" if issued else "all valid, kept"))
    else:
        print(f"issued {issue(args.dir, args.name, args.days)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
