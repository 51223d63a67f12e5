"""``iec61850-mms`` (Nmap 7.95 on): an IEC 61850-8-1 MMS server's Identify answer.

Rule: ``shortport.portnumber(102, "iso-tsap")``. The second argument of
``portnumber`` is the list of *protocols*, so the rule wants port 102 over a
protocol named ``iso-tsap``; a port's protocol is ``tcp``, ``udp`` or ``sctp``,
so the rule never holds and Nmap never runs the action (checked:
``nmap -p102 --script iec61850-mms -d2`` against a listener on 102 never
connects). The rule is reproduced as it is; the action is reproduced too (its
e2e test runs it under a rule made to hold, against Nmap's script with its
rule changed the same way).

Action, as the NSE script runs it: one connection (connect and every read
bounded by 500 ms); a COTP Connection Request (TPKT, TSAPs 0x0000/0x0001),
an ISO session/presentation/ACSE/MMS Initiate-Request, an MMS Identify-Request,
each followed by NSE's ``receive_bytes`` (1024, 1024, 2048 bytes: what arrived
once that many did, or by the 500 ms timeout). A failed send ends the script
with nothing; the first two reads' failures are not looked at; a failed third
read ends it with nothing. The third answer is decoded by ``iec61850mms``
(:mod:`vscand.scripts.proto.mms`): where the decoder gives up the output is the
empty output table (``output=""``); else the script sets ``modelName_identify``,
``vendorName_identify`` and ``modelNumber_identify`` (an empty string becomes
``<EMPTY_STRING>``) or dies indexing a missing ``identify``. It then builds its
GetNameList request with ``MMSEncoder:packmmsInTPKT``, which calls
``asn1.ASN1Encoder.encodeSeq`` without its ``self``: Lua raises "attempt to get
length of a nil value" every time, so the script always dies there and Nmap
prints ``ERROR: Script execution failed (use -d to debug)`` (GetNameList, the
name-plate Read and the rest of the output table are never reached; they are not
written). Nothing is set on the port.

Deliberate difference: an answer on which the decoder loops forever (a TPKT
chain coming back to itself, an MMS integer over 16 bytes in a Read answer)
hangs Nmap; here the script ends at once with nothing, as a script stopped at
its time bound would.

Listed in ``registry.SINCE`` (7.95): a scan reproducing 7.93 does not have it.
"""

from __future__ import annotations

import logging

from vscand.output.script_output import ScriptFailed, ScriptOutput, Table
from vscand.scripts.api import BaseScript, PortView, RuleContext, ScriptRun
from vscand.scripts.exchange import Connection, ExchangeError
from vscand.scripts.proto.luastring import LuaError
from vscand.scripts.proto.mms import EndlessLoop, decode
from vscand.scripts.shortport import port_or_service

__all__ = [
    "CR_TPDU",
    "IDENTIFY",
    "INITIATE",
    "TIMEOUT",
    "Iec61850Mms",
    "identify_output",
    "identify_table",
]

log = logging.getLogger(__name__)

#: ``socket:set_timeout(500)``: the connect and each read
TIMEOUT = 0.5
CR_TPDU = bytes.fromhex("0300001611e00000000100c1020000c2020001c0010a")
INITIATE = bytes.fromhex(
    "030000d302f0800dca0506130100160102140200023302000134020001c1b43181b1a003800101"
    "a281a9810400000001820400000001a423300f0201010604520100013004060251013010020103"
    "060528ca22020130040602510161763074020101a06f606da107060528ca220203a20706052901"
    "876701a30302010ca403020100a503020100a606060429018767a70302010ca803020100a90302"
    "0100be33283106025101020103a028a826800300fde881010a82010a830105a416800101810305"
    "f100820c03ee1c00000000000000ed18"
)
IDENTIFY = bytes.fromhex("0300001b02f08001000100610e300c020103a007a0050201018200")
#: what ``packmmsInTPKT`` dies of (``asn1.lua``'s ``encodeSeq`` called without ``self``)
ENCODE_ERROR = "attempt to get length of a nil value (local 'seqData')"

#: ``shortport.portnumber(102, "iso-tsap")``: port 102, *protocol* iso-tsap, open or open|filtered
_rule = port_or_service([102], (), ("iso-tsap",))


def identify_output(answer: bytes) -> ScriptOutput | None:
    """What the script ends with on the Identify answer: the empty output table where
    the decoder gives up, None where it loops forever, else ScriptFailed (a Lua error
    in the decoder, in the field access, or, after the table is filled, in
    ``packmmsInTPKT``)."""
    try:
        decoded = decode(answer)
    except LuaError as exc:
        raise ScriptFailed(str(exc)) from None
    except EndlessLoop:
        log.info("iec61850-mms: the decoder would loop forever on the answer; ended")
        return None
    if decoded is None:
        return ScriptOutput(table=Table())
    if decoded.pdu is None:
        raise ScriptFailed("bad argument #1 to 'for iterator' (table expected, got string)")
    if decoded.service != "identify":
        raise ScriptFailed("attempt to index a nil value (field 'identify')")
    output = identify_table(decoded.identify)
    log.debug("iec61850-mms: identify %s", output.fields)
    # the GetNameList request next: packmmsInTPKT dies before anything is sent
    raise ScriptFailed(ENCODE_ERROR)


def identify_table(identify: dict[str, bytes]) -> Table:
    """The output table after the Identify answer (empty strings replaced first)."""
    fields = {k: v.decode("latin-1") or "<EMPTY_STRING>" for k, v in identify.items()}
    output = Table()
    for key, name in (
        ("modelName_identify", "modelName"),
        ("vendorName_identify", "vendorName"),
        ("modelNumber_identify", "revision"),
    ):
        output[key] = fields.get(name)
    return output


class Iec61850Mms(BaseScript):
    name = "iec61850-mms"

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return _rule(port)

    async def action(self, run: ScriptRun) -> ScriptOutput | None:
        try:
            conn = await run.exchange.connect(timeout=TIMEOUT)
        except ExchangeError:
            return None
        try:
            return await self._exchange(conn)
        finally:
            conn.close()

    async def _exchange(self, conn: Connection) -> ScriptOutput | None:
        answer = b""
        for query, count in ((CR_TPDU, 1024), (INITIATE, 1024), (IDENTIFY, 2048)):
            try:
                conn.send(query)
            except ExchangeError:
                return None
            try:
                answer = await conn.receive_at_least(count, TIMEOUT)
            except ExchangeError:
                answer = b""
        if not answer:
            return None
        return identify_output(answer)
