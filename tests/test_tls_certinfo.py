"""``service.tls`` certificate facts (pure code): property tests on generated certificates."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from vscand.queue.changes import normalised_service, tls_sha256
from vscand.scan.certinfo import CERTIFICATE_KEYS, certificate_facts, iso_utc, tls_object

KEY = ec.generate_private_key(ec.SECP256R1())

label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12)
dns_names = st.lists(st.builds(lambda a, b: f"{a}.{b}", label, label), max_size=4, unique=True)
ip_names = st.lists(st.ip_addresses(), max_size=2, unique=True)
common_names = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FF, exclude_characters="\x7f"),
    min_size=1,
    max_size=40,
)
moments = st.datetimes(
    min_value=datetime.datetime(1990, 1, 1), max_value=datetime.datetime(2090, 1, 1)
).map(lambda d: d.replace(microsecond=0, tzinfo=datetime.UTC))


def build(
    cn: str,
    dns: list[str],
    ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address],
    start: datetime.datetime,
    days: int,
    serial: int,
) -> tuple[x509.Certificate, bytes]:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Issuer, Inc.")]))
        .public_key(KEY.public_key())
        .serial_number(serial)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
    )
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
    alt += [x509.IPAddress(ip) for ip in ips]
    if alt:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    cert = builder.sign(KEY, hashes.SHA256())
    return cert, cert.public_bytes(serialization.Encoding.DER)


@given(
    common_names,
    dns_names,
    ip_names,
    moments,
    st.integers(1, 3650),
    st.integers(1, 2**159 - 1),
)
def test_facts_describe_the_certificate(
    cn: str,
    dns: list[str],
    ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address],
    start: datetime.datetime,
    days: int,
    serial: int,
) -> None:
    cert, der = build(cn, dns, ips, start, days, serial)
    facts = certificate_facts(der)
    assert set(facts) == set(CERTIFICATE_KEYS)
    assert facts["sha256"] == hashlib.sha256(der).hexdigest()
    assert facts["subject"] == cert.subject.rfc4514_string()
    assert facts["issuer"] == "O=Issuer\\, Inc."
    assert facts["san"] == [f"DNS:{n}" for n in dns] + [f"IP:{ip}" for ip in ips]
    assert facts["not_before"] == start.strftime("%Y-%m-%dT%H:%M:%SZ")
    end = start + datetime.timedelta(days=days)
    assert facts["not_after"] == end.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert int(facts["serial"], 16) == serial
    # the change detector finds the same certificate hash in the tls object
    assert (
        tls_sha256(tls_object("TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256", der)) == facts["sha256"]
    )


@given(st.binary(max_size=300))
def test_garbage_still_has_a_hash_and_never_raises(der: bytes) -> None:
    facts = certificate_facts(der)
    assert facts["sha256"] == hashlib.sha256(der).hexdigest()
    if facts["subject"] is None:
        assert "error" in facts


def test_no_certificate() -> None:
    obj = tls_object("TLSv1.2", "PSK-AES128-CBC-SHA", None)
    assert obj == {
        "version": "TLSv1.2",
        "cipher": "PSK-AES128-CBC-SHA",
        **dict.fromkeys(CERTIFICATE_KEYS),
    }
    assert tls_sha256(obj) is None


@given(moments)
def test_iso_utc_of_aware_and_naive(moment: datetime.datetime) -> None:
    text = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert iso_utc(moment) == text
    assert iso_utc(moment.replace(tzinfo=None)) == text
    shifted = moment.astimezone(datetime.timezone(datetime.timedelta(hours=5)))
    assert iso_utc(shifted) == text


def test_change_detection_sees_a_new_certificate() -> None:
    first = build(
        "a.test", ["a.test"], [], datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC), 30, 1
    )[1]
    second = build(
        "a.test", ["a.test"], [], datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC), 30, 2
    )[1]

    def result(der: bytes) -> dict[str, object]:
        return {
            "state": "open",
            "service": {"name": "http", "tunnel": "ssl", "tls": tls_object("TLSv1.3", "X", der)},
        }

    a, b = normalised_service(result(first)), normalised_service(result(second))
    assert json.loads(a)["tls"] == hashlib.sha256(first).hexdigest()
    assert a != b
    assert normalised_service(result(first)) == a
