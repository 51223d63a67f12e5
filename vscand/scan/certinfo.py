"""What a TLS handshake showed: the ``tls`` object of a result (beyond Nmap).

Pure code: nothing here imports Twisted.  ``certificate_facts`` turns the peer
certificate (DER) into the certificate part of the ``service.tls`` object of the
result format::

    {"version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384",
     "subject": "CN=www.example.com,O=Example", "issuer": "CN=Example CA",
     "san": ["DNS:www.example.com", "IP:192.0.2.1"],
     "not_before": "2026-01-01T00:00:00Z", "not_after": "2027-01-01T00:00:00Z",
     "serial": "4f1e...", "sha256": "9a3c..."}

``sha256`` is the SHA-256 of the certificate's DER encoding, lower-case hex
without colons: the key ``vscand.queue.changes`` compares to report
``tls_changed``.  A certificate that does not parse still has its ``sha256``; the
fields that could not be read are ``None`` and ``error`` says why.  No peer
certificate (anonymous ciphers, PSK) leaves every certificate field ``None``.
"""

from __future__ import annotations

import datetime
import hashlib
from typing import Any

from cryptography import x509

#: the certificate keys of the ``tls`` object, in output order
CERTIFICATE_KEYS = ("subject", "issuer", "san", "not_before", "not_after", "serial", "sha256")


def iso_utc(moment: datetime.datetime) -> str:
    """``2026-11-22T10:00:00Z`` (naive values are UTC, as cryptography's legacy fields are)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.UTC).replace(tzinfo=None)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _general_name(name: x509.GeneralName) -> str:
    if isinstance(name, x509.DNSName):
        return f"DNS:{name.value}"
    if isinstance(name, x509.IPAddress):
        return f"IP:{name.value}"
    if isinstance(name, x509.RFC822Name):
        return f"email:{name.value}"
    if isinstance(name, x509.UniformResourceIdentifier):
        return f"URI:{name.value}"
    if isinstance(name, x509.DirectoryName):
        return f"DirName:{name.value.rfc4514_string()}"
    if isinstance(name, x509.RegisteredID):
        return f"RID:{name.value.dotted_string}"
    if isinstance(name, x509.OtherName):
        return f"othername:{name.type_id.dotted_string}"
    return f"other:{name!r}"


def subject_alt_names(cert: x509.Certificate) -> list[str]:
    """The subjectAltName entries as ``TYPE:value`` strings, in certificate order."""
    try:
        extension = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [_general_name(name) for name in extension.value]


def certificate_facts(der: bytes | None) -> dict[str, Any]:
    """The certificate part of the ``tls`` object from the peer certificate's DER bytes."""
    facts: dict[str, Any] = dict.fromkeys(CERTIFICATE_KEYS)
    if der is None:
        return facts
    facts["sha256"] = hashlib.sha256(der).hexdigest()
    try:
        cert = x509.load_der_x509_certificate(der)
        facts["subject"] = cert.subject.rfc4514_string()
        facts["issuer"] = cert.issuer.rfc4514_string()
        facts["not_before"] = iso_utc(cert.not_valid_before_utc)
        facts["not_after"] = iso_utc(cert.not_valid_after_utc)
        facts["serial"] = format(cert.serial_number, "x")
        facts["san"] = subject_alt_names(cert)
    except (ValueError, TypeError) as exc:  # a malformed certificate is a fact too
        facts["error"] = f"certificate not parsed: {exc}"
    return facts


def tls_object(
    version: str | None, cipher: str | None, certificate_der: bytes | None
) -> dict[str, Any]:
    """The whole ``service.tls`` object."""
    return {"version": version, "cipher": cipher, **certificate_facts(certificate_der)}
