"""UDP probe order for a port-listed port, against the order nmap 7.93 was seen to use."""

from __future__ import annotations

from vscand.probes.matcher import Matcher
from vscand.scan.plan import ProbePlan

# nmap -sU -sV -p U:161 --version-intensity 2 --version-trace (silent server on 127.0.0.1:161):
# "Service scan sending probe <P> to 127.0.0.1:161 (udp)" lines, in order
# by release (Nmap 7.95 of the Debian 13 root, the same command: DTLSSessionReq, new in 7.94, last)
NMAP_ORDER_161_I2 = {
    "7.93": ["SNMPv1public", "SNMPv3GetRequest", "RPCCheck", "DNSVersionBindReq"],
    "7.95": ["SNMPv1public", "SNMPv3GetRequest", "RPCCheck", "DNSVersionBindReq", "DTLSSessionReq"],
}


def test_port_listed_udp_probes_first_then_rarity_no_null(matcher: Matcher) -> None:
    plan = ProbePlan(matcher.db, "UDP", 161, 2)
    names = []
    while (probe := plan.next()) is not None:
        assert probe.protocol == "UDP" and not probe.is_null
        names.append(probe.name)
    assert names == NMAP_ORDER_161_I2[matcher.db.nmap_release]
