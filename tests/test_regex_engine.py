"""Which regex engine matches (``regex_engine``), and PCRE2 against PCRE 8.39 on real data.

Selection: ``auto`` follows the Nmap release that goes with the probe file (the installed
Nmap for the installed file; for another one, its content if it is a release's file, else
its ``$Id:`` header); ``pcre``, ``pcre2`` and ``nmap-X.Y`` are explicit.  Commands are
faked here, except in the tests that check this machine's own installation.

Equivalence: the installed file compiles under PCRE2, and on the oracle's responses every
line of every chain gives the same match, groups and answer under both engines.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.conftest import cache_dir
from tests.oracle.cases import CASES, probe_file_path
from tests.pcre8 import needs_pcre8
from tests.test_prefilter_equivalence import literal_fragments
from vscand.cli import main
from vscand.config import ConfigError, load_config
from vscand.probes import engine as engine_mod
from vscand.probes import pcre2
from vscand.probes import prefilter as prefilter_mod
from vscand.probes import release as release_mod
from vscand.probes.engine import (
    NMAP_7_93,
    NMAP_7_95,
    NMAP_7_991,
    EngineSpecError,
    Profile,
    resolve,
)
from vscand.probes.matcher import Matcher, load_matcher
from vscand.probes.model import ProbeDatabase
from vscand.probes.parser import (
    DEFAULT_PROBE_PATHS,
    ProbeFileError,
    find_probe_file,
    load_probe_files,
    parse_probe_text,
)

HEADER_793 = b"# $Id: nmap-service-probes 38429 2022-08-30 22:35:10Z dmiller $\n"
SMALL_PROBES = b"""Probe TCP NULL q||
match ssh m|^SSH-([\\d.]+)-OpenSSH_([\\w._-]+)\\r?\\n| p/OpenSSH/ v/$2/ i/protocol $1/
match ftp m|^220 (\\S+) FTP| p/$1/
"""


def fake_run(answers: dict[str, str | None]) -> release_mod.Runner:
    """A command runner answering by program name; ``None``: the command fails."""

    def run(argv: Sequence[str]) -> str | None:
        return answers.get(argv[0])

    return run


def refuse_to_run(argv: Sequence[str]) -> str | None:
    raise AssertionError(f"no command should run, ran {argv}")


def dpkg(version: str, status: str = "installed") -> str:
    return f"{status} {version}"


def write_probes(tmp_path: Path, header: bytes = b"", name: str = "nmap-service-probes") -> str:
    path = tmp_path / name
    path.write_bytes(header + SMALL_PROBES)
    return str(path)


# --- selection ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "profile"),
    [
        ("7.93+dfsg1-1", NMAP_7_93),
        ("7.94+git20230807.3be01efb1+dfsg-3", NMAP_7_93),
        ("7.95+dfsg-3", NMAP_7_95),
        ("7.99-1", NMAP_7_95),
        ("7.991+dfsg-1", NMAP_7_991),
        ("1:8.01-1", NMAP_7_991),
    ],
)
def test_auto_follows_the_installed_nmap_common(
    tmp_path: Path, version: str, profile: Profile
) -> None:
    path = write_probes(tmp_path)
    run = fake_run({"dpkg-query": dpkg(version), "nmap": None})
    engine = resolve("auto", path, installed_paths=[path], run=run)
    assert engine.profile is profile
    assert engine.release == version.removeprefix("1:").split("+")[0].split("-")[0]
    assert version in engine.reason


def test_auto_on_a_793_install_is_pcre_and_on_795_pcre2(tmp_path: Path) -> None:
    path = write_probes(tmp_path)
    e793 = resolve(
        "auto", path, installed_paths=[path], run=fake_run({"dpkg-query": dpkg("7.93+dfsg1-1")})
    )
    e795 = resolve(
        "auto", path, installed_paths=[path], run=fake_run({"dpkg-query": dpkg("7.95+dfsg-3")})
    )
    assert (e793.name, e793.profile.match_limit, e793.profile.depth_limit) == (
        "pcre",
        100000,
        10000,
    )
    assert (e795.name, e795.profile.match_limit, e795.profile.depth_limit) == (
        "pcre2",
        100000,
        10000,
    )


def test_auto_falls_back_to_nmap_version(tmp_path: Path) -> None:
    path = write_probes(tmp_path)
    version = "Nmap version 7.95 ( https://nmap.org )\nPlatform: x86_64-pc-linux-gnu\n"
    for dpkg_answer in (None, dpkg("7.93+dfsg1-1", status="config-files")):
        run = fake_run({"dpkg-query": dpkg_answer, "nmap": version})
        engine = resolve("auto", path, installed_paths=[path], run=run)
        assert engine.profile is NMAP_7_95
        assert engine.reason == "nmap --version: 7.95"


def test_installed_file_believes_the_package_before_its_header(tmp_path: Path) -> None:
    path = write_probes(tmp_path, b"# $Id: nmap-service-probes 38700 2024-04-10 00:00:00Z x $\n")
    run = fake_run({"dpkg-query": dpkg("7.93+dfsg1-1")})
    assert resolve("auto", path, installed_paths=[path], run=run).profile is NMAP_7_93
    # not the installed file: its header dates it (the release after its last change)
    assert resolve("auto", path, installed_paths=[], run=run).profile is NMAP_7_95


@pytest.mark.parametrize(
    ("header", "profile", "release"),
    [
        (HEADER_793, NMAP_7_93, "7.93"),
        (b"# $Id: nmap-service-probes 37000 2019-08-01 00:00:00Z x $\n", NMAP_7_93, "7.93"),
        (b"# $Id: nmap-service-probes 38600 2023-11-27 12:00:00Z x $\n", NMAP_7_95, "7.95"),
        (b"# $Id: nmap-service-probes 38900 2025-05-10 12:00:00Z x $\n", NMAP_7_95, "7.97"),
        (b"# $Id: nmap-service-probes 39100 2026-06-01 12:00:00Z x $\n", NMAP_7_991, "7.991"),
        (b"# $Id: nmap-service-probes 39200 2027-01-01 12:00:00Z x $\n", NMAP_7_991, None),
        (
            b"# $Id: nmap-service-probes,v 1.46 2005/01/31 20:40:45 fyodor Exp $\n",
            NMAP_7_93,
            "7.93",
        ),
    ],
)
def test_another_file_is_dated_by_its_header(
    tmp_path: Path, header: bytes, profile: Profile, release: str | None
) -> None:
    path = write_probes(tmp_path, b"# Nmap service detection probe list\n" + header)
    run = fake_run({"dpkg-query": dpkg("7.95+dfsg-3")})  # the installed Nmap is not asked
    engine = resolve("auto", path, installed_paths=["/nonexistent"], run=run)
    assert (engine.profile, engine.release) == (profile, release)
    assert "$Id:" in engine.reason


def test_a_release_file_is_known_by_its_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # as if SMALL_PROBES were Nmap 7.95's file: recognised from a git checkout ("$Id$"),
    # a tarball or a package (expanded keyword) alike, before any header date
    git_copy = write_probes(tmp_path, b"# $Id$\n", name="git")
    digest = release_mod.content_digest(Path(git_copy).read_bytes())
    monkeypatch.setitem(release_mod.RELEASE_FILES, digest, "7.95")
    packaged = write_probes(tmp_path, HEADER_793, name="packaged")
    assert release_mod.content_digest(Path(packaged).read_bytes()) == digest
    run = fake_run({"dpkg-query": dpkg("7.93+dfsg1-1")})
    for path in (git_copy, packaged):
        engine = resolve("auto", path, installed_paths=[], run=run)
        assert (engine.profile, engine.release) == (NMAP_7_95, "7.95")
        assert engine.reason == "probe file content: Nmap 7.95's nmap-service-probes"
    # the installed file is read by the installed Nmap, whatever its content
    engine = resolve("auto", packaged, installed_paths=[packaged], run=run)
    assert engine.profile is NMAP_7_93


def test_installed_793_file_is_in_the_release_table() -> None:
    data = Path(find_probe_file(None)).read_bytes()
    if b"$Id: nmap-service-probes 38429 2022-08-30" not in data[:4096]:
        pytest.skip("the installed probe file is not Debian 12's (Nmap 7.93)")
    assert release_mod.content_release(data) == (
        "7.93",
        "probe file content: Nmap 7.93's nmap-service-probes",
    )


def test_another_file_without_a_header_gets_the_installed_nmap(tmp_path: Path) -> None:
    path = write_probes(tmp_path, b"# $Id$\n")  # as in Nmap's git repository
    run = fake_run({"dpkg-query": dpkg("7.95+dfsg-3")})
    engine = resolve("auto", path, installed_paths=[], run=run)
    assert engine.profile is NMAP_7_95
    assert engine.reason.startswith("installed Nmap")


def test_nothing_known_means_793(tmp_path: Path) -> None:
    path = write_probes(tmp_path)
    engine = resolve("auto", path, installed_paths=[path], run=fake_run({}))
    assert engine.profile is NMAP_7_93 and engine.release is None
    # an installed Nmap older than 7.93: 7.93's rules, the release kept for the report
    old = fake_run({"dpkg-query": dpkg("7.91+dfsg1+really7.80+dfsg1-2")})
    engine = resolve("auto", path, installed_paths=[path], run=old)
    assert (engine.profile, engine.release) == (NMAP_7_93, "7.91")


@pytest.mark.parametrize(
    ("spec", "profile", "release"),
    [
        ("pcre", NMAP_7_93, None),
        ("PCRE2", NMAP_7_95, None),
        (" pcre2 ", NMAP_7_95, None),
        ("nmap-7.93", NMAP_7_93, "7.93"),
        ("nmap-7.94", NMAP_7_93, "7.94"),
        ("nmap-7.95", NMAP_7_95, "7.95"),
        ("nmap-7.98", NMAP_7_95, "7.98"),
        ("nmap-7.991", NMAP_7_991, "7.991"),
        ("nmap-8.0", NMAP_7_991, "8.0"),
    ],
)
def test_explicit_choices_run_nothing(
    tmp_path: Path, spec: str, profile: Profile, release: str | None
) -> None:
    path = write_probes(tmp_path, HEADER_793)
    engine = resolve(spec, path, installed_paths=[path], run=refuse_to_run)
    assert (engine.profile, engine.release) == (profile, release)


@pytest.mark.parametrize("spec", ["", "pcre3", "re", "nmap", "nmap-7", "nmap-7.80", "7.95"])
def test_bad_specs(spec: str) -> None:
    with pytest.raises(EngineSpecError):
        engine_mod.check_spec(spec)


def test_this_machine_auto_is_its_installed_nmap() -> None:
    """Debian 12 with Nmap 7.93: auto is PCRE 8.39, today's behaviour."""
    found = release_mod.installed_release()
    if found is None or found[0] != "7.93":
        pytest.skip(f"the installed Nmap is not 7.93 ({found})")
    engine = resolve("auto", find_probe_file(None), installed_paths=DEFAULT_PROBE_PATHS)
    assert engine.profile is NMAP_7_93 and engine.name == "pcre"
    assert engine.library_version().startswith("8.39")


# --- the database follows the engine ------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        pytest.param("pcre", "vscand.probes.pcre", marks=needs_pcre8, id="pcre"),
        pytest.param("nmap-7.991", "vscand.probes.pcre2", id="nmap-7.991"),
    ],
)
def test_every_line_is_compiled_with_the_database_engine(
    tmp_path: Path, spec: str, kind: str
) -> None:
    path = write_probes(tmp_path, HEADER_793)
    engine = resolve(spec, path)
    extra = tmp_path / "extra.probes"
    extra.write_bytes(b"Probe TCP NULL q||\nmatch x m|^X(\\d)| p/x/ v/$1/\n")
    db = load_probe_files(path, [extra], engine=engine)
    assert db.engine is engine
    assert {type(line.compiled).__module__ for line in db.lines} == {kind}
    assert all(line.engine is engine for line in db.lines)


def test_7991_refuses_a_file_with_an_empty_matching_pattern() -> None:
    text = b"Probe TCP NULL q||\nmatch ok m|^ok|\nmatch bad m|^(x*)|\n"
    parse_probe_text(text, engine=resolve("nmap-7.95", "-"))
    with pytest.raises(ProbeFileError) as exc:
        parse_probe_text(text, engine=resolve("nmap-7.991", "-"))
    assert exc.value.lineno == 3
    assert "zero-length" in exc.value.reason


def test_load_matcher_auto_uses_the_file_release(tmp_path: Path) -> None:
    newer = write_probes(tmp_path, b"# $Id: nmap-service-probes 38700 2024-04-10 00:00:00Z x $\n")
    matcher = load_matcher(newer, use_prefilter=False)
    assert matcher.db.engine.profile is NMAP_7_95
    found = matcher.match(matcher.db.find("NULL"), b"SSH-2.0-OpenSSH_9.2p1\r\n")
    assert found is not None and found.info.version == "9.2p1"


@needs_pcre8
def test_load_matcher_engine_asked_for_overrides_the_file_release(tmp_path: Path) -> None:
    newer = write_probes(tmp_path, b"# $Id: nmap-service-probes 38700 2024-04-10 00:00:00Z x $\n")
    forced = load_matcher(newer, use_prefilter=False, regex_engine="pcre")
    assert forced.db.engine.profile is NMAP_7_93


# --- CLI and daemon configuration ---------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main([*args, "--cache-dir", str(cache_dir())])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_stats_report_the_engine(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    newer = write_probes(tmp_path, b"# $Id: nmap-service-probes 38700 2024-04-10 00:00:00Z x $\n")
    code, out, _ = run_cli(
        capsys, "probes", "--stats", "--json", "--no-prefilter", "--probes", newer
    )
    assert code == 0
    stats = json.loads(out)
    engine = stats["regex_engine"]
    assert engine["name"] == "pcre2" and engine["profile"] == "nmap-7.95"
    assert engine["library"].startswith("10.") and stats["pcre"] == engine["library"]
    assert (engine["match_limit"], engine["depth_limit"]) == (100000, 10000)
    assert engine["heap_limit_source"] == "library default" and engine["jit"] is False
    assert engine["requested"] == "auto" and "$Id:" in engine["chosen_by"]
    code, out, _ = run_cli(
        capsys, "probes", "--stats", "--json", "--no-prefilter", "--probes", newer,
        "--regex-engine", "nmap-7.991",
    )  # fmt: skip
    engine = json.loads(out)["regex_engine"]
    assert (engine["match_limit"], engine["depth_limit"], engine["heap_limit_kib"]) == (
        50000,
        1000,
        10240,
    )
    assert engine["refuse_empty_patterns"] is True
    code, out, _ = run_cli(capsys, "probes", "--stats", "--no-prefilter", "--probes", newer)
    assert "regex_engine: {'name': 'pcre2'" in out


@needs_pcre8  # the file is 7.93's: auto and pcre are PCRE 8
def test_cli_match_with_each_engine(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    probes = write_probes(tmp_path, HEADER_793)
    banner = tmp_path / "banner"
    banner.write_bytes(b"220 ftp.example FTP server ready\r\n")
    outputs = []
    for spec in ("auto", "pcre", "pcre2", "nmap-7.991"):
        code, out, _ = run_cli(
            capsys, "match", "NULL", str(banner), "--json", "--no-prefilter",
            "--probes", probes, "--regex-engine", spec,
        )  # fmt: skip
        assert code == 0
        outputs.append(out)
    assert len(set(outputs)) == 1 and json.loads(outputs[0])["product"] == "ftp.example"


def test_cli_bad_engine_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["probes", "--stats", "--regex-engine", "pcre3"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--regex-engine" in err and "pcre3" in err


def test_daemon_config_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    absent = str(tmp_path / "absent.conf")
    monkeypatch.setattr("vscand.config.DEFAULT_CONFIG_PATH", absent)
    assert load_config(None, {}, environ={"VSCAND_CACHE_DIR": "/c"}).regex_engine == "auto"
    path = tmp_path / "vscand.conf"
    path.write_text("[vscand]\nregex_engine = PCRE2\n")
    assert load_config(str(path), {}, environ={}).regex_engine == "pcre2"
    over = load_config(str(path), {"regex_engine": "nmap-7.991"}, environ={})
    assert over.regex_engine == "nmap-7.991"
    path.write_text("[vscand]\nregex_engine = hyperscan\n")
    with pytest.raises(ConfigError) as exc:
        load_config(str(path), {}, environ={})
    assert str(exc.value).startswith(f"{path}: regex_engine: must be auto, pcre, pcre2 or nmap-X.Y")


# --- the prefilter cache ------------------------------------------------------------------------


def test_brace_risk() -> None:
    risky = [b"a{,3}", b"x{ 2 }", b"x{2, 3}", b"^\\d{,2}:", b"a{1 ,}"]
    safe = [b"a{3}", b"a{2,}", b"a{2,5}", b"{}", b"a{x}", b"\\{foo\\}", b"a{ }", b"plain"]
    assert [p for p in risky if not prefilter_mod.pcre2_brace_risk(p)] == []
    assert [p for p in safe if prefilter_mod.pcre2_brace_risk(p)] == []


@pytest.fixture
def hyperscan() -> None:
    if not prefilter_mod.available():
        pytest.skip("hyperscan is not importable")


@pytest.mark.usefixtures("hyperscan")
def test_cache_key_unchanged_for_pcre_and_distinct_for_pcre2(tmp_path: Path) -> None:
    path = write_probes(tmp_path, HEADER_793)
    digest = "d" * 64
    pcre_engine, pcre2_engine = resolve("pcre", path), resolve("pcre2", path)
    assert pcre_engine.cache_tag == ""
    assert prefilter_mod.cache_key(digest, pcre_engine.cache_tag) == prefilter_mod.cache_key(digest)
    tag = pcre2_engine.cache_tag
    assert tag.startswith("pcre2:10.") and tag.endswith(":nmap-7.95")
    keys = {prefilter_mod.cache_key(digest, e.cache_tag) for e in (pcre_engine, pcre2_engine)}
    keys.add(prefilter_mod.cache_key(digest, resolve("nmap-7.991", path).cache_tag))
    assert len(keys) == 3


@needs_pcre8  # against the pcre engine's answers
@pytest.mark.usefixtures("hyperscan")
def test_pcre2_prefilter_confirms_brace_lines_always(tmp_path: Path) -> None:
    text = b"Probe TCP NULL q||\nmatch a m|^A{,3}B| p/a/\nmatch b m|^B\\d+| p/b/\n"
    path = tmp_path / "braces.probes"
    path.write_bytes(HEADER_793 + text)
    for spec, always in (("pcre", set()), ("pcre2", {0})):
        matcher = load_matcher(str(path), cache_dir=tmp_path / "cache", regex_engine=spec)
        assert matcher.prefilter is not None and set(matcher.prefilter.always) == always
        again = load_matcher(str(path), cache_dir=tmp_path / "cache", regex_engine=spec)
        assert again.stats is not None and again.stats.prefilter == "cache"
        assert again.prefilter is not None and set(again.prefilter.always) == always
        # Hyperscan reads "{,3}" literally, as PCRE 8 does; PCRE2 10.43+ reads {0,3}: the
        # prefiltered answer must still be the plain one
        plain = load_matcher(str(path), use_prefilter=False, regex_engine=spec)
        for subject in (b"A{,3}B", b"AAB", b"B1"):
            got, want = (m.match(m.db.find("NULL"), subject) for m in (matcher, plain))
            assert (got and got.line.index) == (want and want.line.index), (spec, subject)
    assert len(list((tmp_path / "cache").iterdir())) == 2


# --- PCRE2 against PCRE 8.39 on the installed 7.93 file -----------------------------------------


@pytest.fixture(scope="module")
def databases(shipped_probes_file: str) -> dict[tuple[str, str], ProbeDatabase]:
    """(file, engine) -> database: the installed file and the oracle's custom files."""
    files = {shipped_probes_file} | {
        str(probe_file_path(c.probes)) for c in CASES if probe_file_path(c.probes) is not None
    }
    return {
        (path, spec): load_probe_files(path, engine=resolve(spec, path))
        for path in sorted(files)
        for spec in ("pcre", "pcre2")
    }


@needs_pcre8  # PCRE2 against PCRE 8.39
def test_installed_file_compiles_under_pcre2(
    databases: dict[tuple[str, str], ProbeDatabase], shipped_probes_file: str
) -> None:
    old = databases[(shipped_probes_file, "pcre")]
    new = databases[(shipped_probes_file, "pcre2")]
    assert len(new.lines) == len(old.lines) > 11000
    compiled = [line.compiled for line in new.lines]
    assert {type(p).__module__ for p in compiled} == {"vscand.probes.pcre2"}
    assert [p.capture_count for p in compiled] == [
        line.compiled.capture_count for line in old.lines
    ]
    # and Nmap 7.991's rule would not refuse any of its patterns
    assert [line.where() for line in new.lines if line.compiled.match_empty] == []  # type: ignore[attr-defined]


@needs_pcre8  # PCRE2 against PCRE 8.39
def test_oracle_responses_match_alike_line_by_line(
    databases: dict[tuple[str, str], ProbeDatabase], shipped_probes_file: str
) -> None:
    """Every oracle response against every line of its probe's chain, under both engines."""
    compared = matched = 0
    differences = []
    # PCRE2 10.43+ reads "{,n}" as a quantifier (pcre.probes has one such line): expected
    braces_differ = int(pcre2.version().split()[0].split(".")[1]) >= 43
    expected = []
    for case in CASES:
        path = str(probe_file_path(case.probes) or shipped_probes_file)
        old = databases[(path, "pcre")].find(case.probe)
        new = databases[(path, "pcre2")].find(case.probe)
        for old_member, new_member in zip(old.chain, new.chain, strict=True):
            for old_line, new_line in zip(old_member.matches, new_member.matches, strict=True):
                a = old_line.compiled.search(case.response)
                b = new_line.compiled.search(case.response)
                compared += 1
                matched += a is not None
                if a != b:
                    known = braces_differ and prefilter_mod.pcre2_brace_risk(old_line.pattern)
                    (expected if known else differences).append((case.id, old_line.where(), a, b))
    assert len(CASES) > 200 and compared > 400_000 and matched > 200
    assert differences == []
    if not braces_differ:
        assert expected == []


@needs_pcre8  # PCRE2 against PCRE 8.39
def test_line_fragments_match_alike(
    databases: dict[tuple[str, str], ProbeDatabase], shipped_probes_file: str
) -> None:
    """A subject built from each line's own literal text, against that line."""
    old = databases[(shipped_probes_file, "pcre")].lines
    new = databases[(shipped_probes_file, "pcre2")].lines
    matched = 0
    differences = []
    for old_line, new_line in zip(old, new, strict=True):
        text = literal_fragments(old_line.pattern)
        for subject in (text, text + b"\r\n", b"\0" + text):
            a = old_line.compiled.search(subject)
            b = new_line.compiled.search(subject)
            matched += a is not None
            if a != b:
                differences.append((old_line.where(), subject[:40], a, b))
    assert matched > 5000
    assert differences == []


@needs_pcre8  # PCRE2 against PCRE 8.39
def test_7991_limits_change_answers_on_long_responses(
    databases: dict[tuple[str, str], ProbeDatabase], shipped_probes_file: str
) -> None:
    """Found comparing the profiles: Nmap 7.991's lower limits turn some long responses that
    7.93 and 7.95 match into no match (SGI tcpmux listing 1500 services: depth limit)."""
    [index] = [
        line.index
        for line in databases[(shipped_probes_file, "pcre")].lines
        if line.pattern.startswith(b"^(sgi_[-.\\w]+\\r\\n(?:")
    ]
    subject = b"sgi_svc\r\n" + b"svc\r\n" * 1500
    assert databases[(shipped_probes_file, "pcre")].lines[index].compiled.hits(subject)
    assert databases[(shipped_probes_file, "pcre2")].lines[index].compiled.hits(subject)
    strict = load_probe_files(shipped_probes_file, engine=resolve("nmap-7.991", "-"))
    line = strict.lines[index]
    assert line.compiled.search_status(subject) == pcre2.PCRE2_ERROR_DEPTHLIMIT
    assert line.compiled.search(subject) is None
    # a short listing still matches
    assert line.compiled.hits(b"sgi_svc\r\n" + b"svc\r\n" * 10)


@pytest.fixture(scope="module")
def pcre2_matchers(shipped_probes_file: str, matcher: Matcher) -> tuple[Matcher, Matcher]:
    """The installed file under PCRE2: plain, and with the (engine-independent) prefilter."""
    plain = load_matcher(shipped_probes_file, use_prefilter=False, regex_engine="pcre2")
    fast = Matcher(db=plain.db, prefilter=matcher.prefilter)
    return plain, fast


def test_oracle_answers_alike(
    pcre2_matchers: tuple[Matcher, Matcher], matcher: Matcher, plain_matcher: Matcher
) -> None:
    """The whole answer (service, line, version fields) for every shipped-file oracle case."""
    pcre2_plain, pcre2_fast = pcre2_matchers
    seen = 0
    for case in CASES:
        if probe_file_path(case.probes) is not None:
            continue
        answers = []
        for m in (plain_matcher, matcher, pcre2_plain, pcre2_fast):
            if m.prefilter is None and m is pcre2_fast:
                continue
            found = m.match(m.db.find(case.probe), case.response)
            answers.append(
                None
                if found is None
                else (found.service, found.soft, found.line.index, found.matched_probe, found.info)
            )
        assert all(a == answers[0] for a in answers), case.id
        seen += answers[0] is not None
    assert seen > 50
