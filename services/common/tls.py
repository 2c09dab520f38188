"""Mutual TLS between the suite's services: server credentials that require a suite client certificate
and reload their files without a restart, client credentials that present one, and the peer identity.

Certificates come from `python -m services.common.certs` (a directory of `ca.crt` and
`<identity>.crt/.key`). A server re-reads its certificate, key and CA when their files change, on the
next handshake: rotating a certificate is `certs issue NAME` (or copying new files in place), no restart.
A client reads its files when its channel is made (the gateway: at start).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import grpc
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from services.common.settings import PublicTlsSettings, ServiceSettings

log = structlog.get_logger("tls")

SPIFFE_PREFIX = "spiffe://imagesearch/"


@dataclass(frozen=True)
class CertFiles:
    """One identity's certificate and key, and the suite CA that signs every peer's certificate."""

    cert: Path
    key: Path
    ca: Path

    @classmethod
    def in_dir(cls, directory: Path, identity: str) -> CertFiles:
        return cls(directory / f"{identity}.crt", directory / f"{identity}.key", directory / "ca.crt")

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(certificate chain, private key, CA), each PEM."""
        try:
            return self.cert.read_bytes(), self.key.read_bytes(), self.ca.read_bytes()
        except OSError as exc:
            raise RuntimeError(
                f"TLS files missing or unreadable ({exc.filename}); "
                "create them with `python -m services.common.certs init --dir DIR`"
            ) from exc

    def stamp(self) -> tuple[float, ...]:
        """Changes whenever one of the files is replaced or rewritten."""
        return tuple(p.stat().st_mtime_ns for p in (self.cert, self.key, self.ca))


def cert_files(settings: ServiceSettings, service_name: str) -> CertFiles | None:
    """This service's certificate files, or None when internal TLS is off."""
    if settings.tls_dir is None:
        return None
    return CertFiles.in_dir(settings.tls_dir, settings.tls_identity or service_name)


class ReloadingServerConfig:
    """The fetcher behind `grpc.dynamic_ssl_server_credentials`: gRPC calls it before each handshake;
    it returns a new configuration when the files changed, else None (keep the current one). A file
    caught mid-rotation (unreadable, or a key that does not match) keeps the previous configuration."""

    def __init__(self, files: CertFiles) -> None:
        self._files = files
        self._lock = threading.Lock()  # gRPC may call the fetcher from several core threads
        self._stamp = files.stamp()

    def initial(self) -> grpc.ServerCertificateConfiguration:
        return self._configuration(*self._files.read())

    @staticmethod
    def _configuration(cert: bytes, key: bytes, ca: bytes) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            try:
                stamp = self._files.stamp()
                if stamp == self._stamp:
                    return None
                cert, key, ca = self._files.read()
                _check_pair(cert, key)
            except (OSError, RuntimeError, ValueError) as exc:
                # Mid-rotation (the key written, the certificate not yet) or damaged: the next
                # handshake looks again.
                log.warning("TLS files unusable; keeping the current certificate", error=str(exc))
                return None
            self._stamp = stamp
            log.info("TLS certificate files changed; new handshakes use them", cert=str(self._files.cert))
            return self._configuration(cert, key, ca)


def _check_pair(cert_pem: bytes, key_pem: bytes) -> None:
    """ValueError unless the PEM key is the private half of the PEM certificate."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    public = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(*public) != key.public_key().public_bytes(*public):
        raise ValueError("the private key does not match the certificate")


def mutual_server_credentials(files: CertFiles) -> grpc.ServerCredentials:
    """Server credentials that refuse any handshake without a client certificate from the suite CA."""
    fetcher = ReloadingServerConfig(files)
    return grpc.dynamic_ssl_server_credentials(fetcher.initial(), fetcher, require_client_authentication=True)


def public_server_credentials(settings: PublicTlsSettings) -> grpc.ServerCredentials | None:
    """One-way TLS for a client-facing port (no client certificate), or None when not configured."""
    cert, key = settings.public_tls_cert_file, settings.public_tls_key_file
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ValueError("public TLS needs both public_tls_cert_file and public_tls_key_file")
    return grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])


def client_credentials(files: CertFiles) -> grpc.ChannelCredentials:
    """Credentials of a channel to another suite service: trusts only the suite CA, presents `files`."""
    cert, key, ca = files.read()
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def peer_identity(auth_context: dict[str, list[bytes]]) -> str | None:
    """The caller's suite identity from its verified certificate: the SAN URI spiffe://imagesearch/<id>,
    else its CN. None for a plaintext peer."""
    for uri in auth_context.get("x509_subject_alternative_name", ()):
        text = uri.decode(errors="replace")
        if text.startswith(SPIFFE_PREFIX):
            return text[len(SPIFFE_PREFIX) :]
    for cn in auth_context.get("x509_common_name", ()):
        return cn.decode(errors="replace")
    return None
