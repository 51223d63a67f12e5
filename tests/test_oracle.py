"""vscan against Nmap itself: the oracle harness (tests/oracle/).

``tests/oracle/fixtures/nmap-7.93.json`` holds what ``nmap -sV --version-all``
reported for every case of ``tests/oracle/cases.py`` when the case's response was
replayed on 127.0.0.1 (see ``tests/oracle/regenerate.py`` for how, and why the
answer equals the single-chain answer of ``vscan match``).  Every case is
compared field by field -- service name, the six version fields, CPE list,
tunnel, soft/hard, the matching probe and line number -- on the prefiltered and
the plain matcher path, a few through the real CLI, and a live subset runs nmap
itself (``-m oracle_live``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests import pcre8
from tests.conftest import cache_dir
from tests.hostile.measure import allowed, faithful_bound
from tests.oracle.cases import CASES, SHIPPED, Case, by_id, probe_file_path
from tests.oracle.regenerate import FIXTURE, nmap_binary, probe_file_for, run_oracle
from tests.pcre8 import needs_pcre8
from tests.releases import debian12, require
from vscand.probes import pcre2
from vscand.probes.matcher import Matcher, ServiceMatch, load_matcher
from vscand.service import service_from_match

#: the fixtures are Nmap 7.93's answers on its probe file, replayed with its regex library,
#: PCRE 8, where it exists (Debian 12); on Debian 13, which has no PCRE 8, with PCRE2 on 7.93's
#: file from the Debian 12 root (tests/releases.py; `make test` builds it there): the two
#: engines answer alike on every case (tests/test_regex_engine.py, test_oracle_answers_alike)
REGEX_ENGINE = "auto" if pcre8.AVAILABLE else "pcre2"


#: cases about PCRE 8 reading ``{,3}`` literally (tests/oracle/cases.py): under PCRE2 10.43+ the
#: answer is the other library's, the one 7.95's answer differs by
PCRE8_BRACE_CASES = frozenset({"rx-brace-literal", "rx-brace-python"})


def pcre2_reads_min_brace() -> bool:
    """PCRE2 10.43 and later read ``{,n}`` as a quantifier (``{0,n}``)."""
    major, minor = pcre2.version().split()[0].split(".")[:2]
    return (int(major), int(minor)) >= (10, 43)


def shipped_file() -> str:
    """Nmap 7.93's nmap-service-probes: the installed one on Debian 12, else the root's."""
    return str(require(debian12()).probes_file)


def cli_options(probes: str) -> list[str]:
    """``vscan match`` options for a case's probe file, read as 7.93 reads it (the custom files
    name no release: ``auto`` would take the installed Nmap's, 7.95 on Debian 13), under
    :data:`REGEX_ENGINE`."""
    path = probe_file_path(probes)
    return [
        *("--probes", str(path or shipped_file())),
        *("--nmap-release", "7.93", "--regex-engine", REGEX_ENGINE),
    ]


VERSION_FIELDS = ("product", "version", "extrainfo", "hostname", "ostype", "devicetype")
CLI_CASES = (
    "ssh-openssh-ubuntu",
    "mysql-5-7",
    "dns-bind-ubuntu",
    "vmware-auth-ssl",
    "tpl-nul-capture",
    "cpe-escape",
    "ch-ssl-soft",
    "ch-nomatch-chain",
)


@pytest.fixture(scope="module")
def fixture_doc() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text())


@pytest.fixture(scope="module")
def matchers(matcher: Matcher, plain_matcher: Matcher) -> dict[tuple[str, bool], Matcher]:
    """(probe file, prefilter?) -> Matcher; the shipped file reuses conftest's."""
    table: dict[tuple[str, bool], Matcher] = {}
    if matcher.db.nmap_release == "7.93" and REGEX_ENGINE == "auto":
        table = {(SHIPPED, True): matcher, (SHIPPED, False): plain_matcher}
    for name in {c.probes for c in CASES}:
        if (name, True) in table:
            continue
        path = str(probe_file_path(name) or shipped_file())
        options: dict[str, Any] = {"release": "7.93", "regex_engine": REGEX_ENGINE}
        table[(name, True)] = load_matcher(path, cache_dir=cache_dir(), **options)
        table[(name, False)] = load_matcher(path, use_prefilter=False, **options)
    return table


def nmap_answer(rec: dict[str, Any]) -> dict[str, Any] | None:
    """The fixture's record reduced to what a single chain can tell (None: no match)."""
    if rec.get("method") != "probed":
        return None
    answer = {key: rec.get(key) for key in ("name", *VERSION_FIELDS, "tunnel")}
    answer["cpe"] = list(rec.get("cpe", []))
    answer["soft"] = rec["soft"]
    match = rec["match"]
    answer["via"] = match["via"] if match else None
    answer["line"] = match["line"] if match else None
    return answer


def vscan_answer(found: ServiceMatch | None) -> dict[str, Any] | None:
    if found is None:
        return None
    service = service_from_match(found)
    answer = {key: service[key] for key in ("name", *VERSION_FIELDS, "tunnel")}
    answer["cpe"] = list(service["cpe"])
    answer["soft"] = found.soft
    answer["via"] = found.matched_probe
    answer["line"] = found.line.lineno
    return answer


def run_vscan(m: Matcher, case: Case) -> ServiceMatch | None:
    return m.match(m.db.find(case.probe, "TCP"), case.response)


def test_enough_cases_and_fixture_is_current(fixture_doc: dict[str, Any]) -> None:
    table = by_id()
    assert len(table) >= 150
    assert fixture_doc["nmap_version"] == "7.93"
    recorded = fixture_doc["cases"]
    missing = sorted(set(table) - set(recorded))
    assert not missing, f"run tests/oracle/regenerate.py: no nmap answer for {missing}"
    stale = sorted(
        cid
        for cid, case in table.items()
        if (recorded[cid]["digest"], recorded[cid]["probe"], recorded[cid]["probes"])
        != (case.digest, case.probe, case.probes)
    )
    assert not stale, f"run tests/oracle/regenerate.py: cases changed since recorded: {stale}"
    for name, digest in fixture_doc["probe_files"].items():
        if name == SHIPPED:
            continue
        current = hashlib.sha256(Path(probe_file_for(name)).read_bytes()).hexdigest()[:16]
        assert current == digest, f"{name} changed since the fixtures were recorded"


def test_fixture_records_are_usable(fixture_doc: dict[str, Any]) -> None:
    """Every nmap answer is open, and a probed one names the line that made it."""
    for cid, entry in fixture_doc["cases"].items():
        rec = entry["nmap"]
        assert rec["state"] == "open", cid
        if rec.get("method") == "probed":
            assert rec["conf"] == 10, cid
            assert rec["match"] is not None, cid
            assert len(rec["trace"]) == 1, cid  # one read, one match event


@pytest.mark.parametrize("prefilter", [True, False], ids=["prefilter", "plain"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_vscan_agrees_with_nmap(
    case: Case,
    prefilter: bool,
    matchers: dict[tuple[str, bool], Matcher],
    fixture_doc: dict[str, Any],
) -> None:
    if case.id in PCRE8_BRACE_CASES and REGEX_ENGINE == "pcre2" and pcre2_reads_min_brace():
        pytest.skip(
            "PCRE 8's literal {,3}, which PCRE2 10.43+ reads as {0,3} (DESIGN.md, Regex engines): "
            "a case of Nmap 7.93's library, replayed here with PCRE2 (no PCRE 8 on this system)"
        )
    rec = fixture_doc["cases"][case.id]["nmap"]
    found = run_vscan(matchers[(case.probes, prefilter)], case)
    assert vscan_answer(found) == nmap_answer(rec), case.desc


def _vscan_cli() -> list[str]:
    script = Path(sys.executable).with_name("vscan")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from vscand.cli import main; sys.exit(main())"]


TRACE_RE = re.compile(
    r"^Service scan (soft|hard) match \(Probe (\S+) matched with (\S+) line (\d+)\): (\S+)$",
    re.M,
)


@pytest.mark.parametrize("case_id", CLI_CASES)
def test_cli_agrees_with_nmap(case_id: str, fixture_doc: dict[str, Any]) -> None:
    case = by_id()[case_id]
    cmd = [*_vscan_cli(), "match", case.probe, "-", "--json", "--trace"]
    cmd += cli_options(case.probes)
    env = dict(os.environ, VSCAND_CACHE_DIR=str(cache_dir()))
    proc = subprocess.run(
        cmd, check=False, input=case.response, capture_output=True, env=env, timeout=120
    )
    expected = nmap_answer(fixture_doc["cases"][case_id]["nmap"])
    service = json.loads(proc.stdout)
    if expected is None:
        assert proc.returncode == 1
        assert service is None
        return
    assert proc.returncode == 0, proc.stderr
    trace = TRACE_RE.search(proc.stderr.decode())
    assert trace is not None, proc.stderr
    kind, probe, via, line, svc = trace.groups()
    got = {key: service[key] for key in ("name", *VERSION_FIELDS, "tunnel")}
    got["cpe"] = service["cpe"]
    got["soft"] = kind == "soft"
    got["via"] = via
    got["line"] = int(line)
    assert probe == case.probe
    assert svc == fixture_doc["cases"][case_id]["nmap"]["trace"][0]["text"].split(".  ")[0]
    assert service["method"] == "probed" and service["conf"] == 10
    assert got == expected


# -- live: nmap itself, now ---------------------------------------------------------


@pytest.mark.oracle_live
@needs_pcre8  # nmap 7.93 now, beside vscan on its library
def test_live_nmap_agrees_with_vscan(
    tmp_path: Path, matchers: dict[tuple[str, bool], Matcher]
) -> None:
    nmap = nmap_binary()
    if nmap is None:
        if os.environ.get("CI") == "true":
            pytest.fail("nmap is not installed (required in CI for the oracle tests)")
        pytest.skip("nmap is not installed")
    live = [c for c in CASES if c.live]
    assert 10 <= len(live) <= 20
    assert all(c.probes != SHIPPED for c in live)  # short waits only
    version, results, info = run_oracle(live, tmp_path, nmap)
    assert version == "7.93"
    # the probe files' own waits: each port's whole --version-all plan (every probe, so the
    # port only orders them), through TLS as well (the ssl cases), the ports and the files'
    # nmap runs in parallel; under the suite's machine allowance (tests/hostile/measure.py)
    bound = max(
        faithful_bound(matchers[(c.probes, False)].db, "TCP", 1, 9, tls_restart=True) for c in live
    )
    assert info["seconds"] <= allowed(bound), (info, bound)
    disagreements = {}
    for case in live:
        want = nmap_answer(results[case.id])
        for prefilter in (True, False):
            got = vscan_answer(run_vscan(matchers[(case.probes, prefilter)], case))
            if got != want:
                disagreements[(case.id, prefilter)] = (want, got)
    assert not disagreements
