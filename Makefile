# vscand — the README's commands. Every target installs what it needs first.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
# The Debian release (VERSION_ID of /etc/os-release: 12 bookworm, 13 trixie; empty on
# testing/sid): package lists differ where a package exists in one release only.
DEBIAN_VERSION := $(shell . /etc/os-release 2>/dev/null && echo "$${VERSION_ID:-}")
# The regex libraries: PCRE2 (libpcre2-8-0, what Nmap 7.95 and later link; vscand's
# PCRE2 engine) everywhere; PCRE 8 (libpcre3, what Nmap 7.93 links; vscand's PCRE
# engine) only where it still exists: Debian 12 and older. Debian 13 dropped it, and
# its Nmap 7.95 probe file selects the PCRE2 engine (regex_engine auto).
PCRE_PACKAGES := libpcre2-8-0 $(if $(filter 10 11 12,$(DEBIAN_VERSION)),libpcre3)
# What `make demo` needs: Nmap's data files (the probe database), the regex libraries,
# redis-server (the demo's private Redis), python3-venv (`python3 -m venv` on Debian).
# Its SSH/FTP/HTTP/MySQL services are lookalikes tools/demo.py serves itself.
DEMO_APT_PACKAGES := nmap-common $(PCRE_PACKAGES) redis-server python3-venv
# What `make test` adds (see system-deps below):
# rpcbind: the real portmapper of tests/test_e2e_scripts.py (rpcinfo/rpc-grind vs nmap);
# iproute2 (ip netns) and util-linux (unshare) run it in a private network namespace;
# mosquitto, prosody, snmpd, coturn, mumble-server: real MQTT, XMPP, SNMP, STUN and
# Murmur servers for the mqtt-subscribe, xmpp-info, snmp-info, stun-version and
# murmur-version end-to-end tests
# (tests/test_e2e_scripts_*.py, started in their own namespace from generated configs).
# tmux: the terminal of tests/test_scan_cli.py's progress-display test.
# default-jre-headless: a real JVM's JDWP agent for jdwp-version
# (tests/test_e2e_scripts_enterprise.py; OpenJDK 17 on Debian 12, 21 on 13: ~44 MB to fetch).
# Every name exists in Debian 12 and 13 (checked in a trixie root with apt-cache policy).
TEST_APT_PACKAGES := nmap ndiff libxml2-utils \
	openssh-server nginx vsftpd prometheus rpcbind iproute2 util-linux dnsmasq-base snmpd \
	stunnel4 openssl mosquitto prosody coturn mumble-server tmux default-jre-headless
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all install uninstall system-deps demo-deps venv demo-venv debian12-root debian13-root other-root demo test test-debian13 test-oracle-other test-repeat lint bench bench-engines bench-scan bench-fast soak clean

all: test

# Debian packages: Nmap's data files (the probe database), nmap and ndiff (the
# oracle), the regex libraries (PCRE_PACKAGES), redis-server (daemon tests);
# openssh-server, nginx, vsftpd: real daemons for the end-to-end test, which starts
# its own copies on free 127.0.0.1 ports from generated configs. In a container
# postinst does not start the packaged services (policy-rc.d / no init); where it
# does (ports 22, 80, 21), the tests are unaffected. prometheus: its promtool lints
# the daemon's metrics endpoint (tests/test_metrics.py; 9090 if it starts, unused).
# dnsmasq-base, snmpd: real UDP services for tests/test_udp_e2e.py (dnsmasq-base is the
# binary without the system service; snmpd's packaged agent, if it starts, is unused).
# stunnel4 and openssl (s_server): real TLS servers for the SSL-restart end-to-end
# test (tests/test_tls_e2e.py), started on free 127.0.0.1 ports from generated configs.

# apt_install: install those of the packages $(1) that are not installed yet
define apt_install
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends $$missing; \
	fi
endef

demo-deps:
	$(call apt_install,$(DEMO_APT_PACKAGES))

system-deps:
	$(call apt_install,$(DEMO_APT_PACKAGES) $(TEST_APT_PACKAGES))

# editable_mode=compat puts the checkout on sys.path, so Twisted's plugin scan finds
# twisted/plugins/vscand_plugin.py (the default "lenient" editable finder hides it: no
# `twistd vscand`). Then regenerate dropin.cache now, while it is writable: a hardened
# service cannot write it and would rescan every plugin on each start.
# The package with the `accel` extra (Hyperscan prefilter; wheels for CPython 3.11 and
# 3.13), or without it where it cannot install: the matcher gives the same answers on
# its plain path, only slower.
$(VENV)/.installed-base: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[accel]' --config-settings editable_mode=compat || { \
	  echo "NOTE: the optional accel extra (hyperscan) did not install; installing without it (plain matcher path)"; \
	  $(PY) -m pip install -q -e . --config-settings editable_mode=compat; }
	$(PY) -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
	touch $@

# the test extras on top
$(VENV)/.installed: $(VENV)/.installed-base
	$(PY) -m pip install -q -e '.[test]' --config-settings editable_mode=compat
	$(PY) -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
	touch $@

demo-venv: demo-deps $(VENV)/.installed-base
venv: system-deps $(VENV)/.installed

# A root of the other Debian release (tools/debian-root; ~600 MB, about a minute to build):
# Debian 13's Nmap 7.95 on a Debian 12 machine, Debian 12's Nmap 7.93 on a Debian 13 one,
# the second release the tests compare against (tests/releases.py). debootstrap (a Debian
# package, needed by these targets only) is installed here rather than in the package
# lists; the mirror is read from this machine's apt sources. Built once (a stamp file).
OTHER_DEBIAN := $(if $(filter 13,$(DEBIAN_VERSION)),12,13)
ROOT_APT_PACKAGES := debootstrap
debian12-root debian13-root: debian%-root:
	$(call apt_install,$(ROOT_APT_PACKAGES))
	$(SUDO) tools/debian-root $*

other-root: debian$(OTHER_DEBIAN)-root

# The daemon end to end: a private Redis (unless VSCAND_REDIS_URL is set), a few
# local services, `twist vscand`, one job over loopback, the results table, then
# everything it started is stopped.
demo: demo-venv
	$(PY) tools/demo.py

# Install on this machine (README, "Install"): tools/install puts a virtualenv in
# $(DESTDIR)/opt/vscand, the config in $(DESTDIR)/etc/vscand (never overwritten), the units in
# $(DESTDIR)/etc/systemd/system. With DESTDIR set (a scratch root: the tests) it touches
# nothing else: no apt, no systemctl. Without it, the runtime packages first: Nmap's probe
# database, the regex libraries, python3-venv. PURGE=1 uninstalls the config too;
# VSCAND_PIP_ARGS adds pip arguments (e.g. --no-index --find-links DIR).
INSTALL_APT_PACKAGES := nmap-common $(PCRE_PACKAGES) python3-venv
install:
	$(if $(DESTDIR),,$(call apt_install,$(INSTALL_APT_PACKAGES)))
	DESTDIR="$(DESTDIR)" PYTHON="$(PYTHON)" tools/install install

uninstall:
	DESTDIR="$(DESTDIR)" PURGE="$(PURGE)" tools/install uninstall

# TEST_WORKERS=0 runs the suite in one process
TEST_WORKERS ?= 3
test: venv other-root
	$(PY) -b -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile) $(PYTEST_ARGS)

# `make demo` then `make test` as a Debian 13 user runs them: a clean clone of HEAD in a
# fresh copy of the Debian 13 root (tools/test-debian13; logs in .cache/debian13/test-logs;
# TEST_WORKERS defaults to 1 there)
test-debian13: debian13-root
	$(SUDO) env TEST_WORKERS="$${TEST_WORKERS:-1}" PYTEST_ARGS="$${PYTEST_ARGS:-}" tools/test-debian13

# opt-in: the differential e2e suites against the other release's Nmap (the root's: 7.95 on
# Debian 12, 7.93 on Debian 13) instead of the installed nmap (VSCAND_ORACLE=debian12|13, read
# by tests/releases.py; vscan loads that root's probe file). One module after the other, no
# workers. DESIGN.md, "Against the other release's Nmap"; `make test` is unchanged.
ORACLE_SUITES ?= tests/test_e2e_scan.py tests/test_tls_e2e.py tests/test_udp_e2e.py tests/test_e2e_fast.py \
	tests/test_e2e_scripts.py tests/test_e2e_scripts_brokers_vpn.py tests/test_e2e_scripts_udp_services.py \
	tests/test_e2e_scripts_industrial.py tests/test_e2e_scripts_enterprise.py tests/test_e2e_scripts_agents.py \
	tests/test_e2e_scripts_http.py tests/test_e2e_scripts_games.py tests/test_e2e_scripts_voip.py \
	tests/test_e2e_script_writers.py tests/test_e2e_iec61850_mms.py
test-oracle-other: venv other-root
	@rc=0; for suite in $(ORACLE_SUITES); do \
	  VSCAND_ORACLE=debian$(OTHER_DEBIAN) $(PY) -b -m pytest -q $$suite $(PYTEST_ARGS) || rc=1; \
	done; exit $$rc

# the whole suite ROUNDS times, each from a clean clone of HEAD as CI runs it (LOAD=1: with a
# CPU-bound process beside it); lists every test that failed at least once, exit 0 if none
ROUNDS ?= 3
test-repeat:
	python3 tools/test_repeat.py --rounds $(ROUNDS) $(if $(filter 1,$(LOAD)),--load)

lint: venv
	$(VENV)/bin/ruff check vscand tests benchmarks tools
	$(VENV)/bin/ruff format --check vscand tests benchmarks tools
	$(VENV)/bin/mypy vscand

bench: venv
	$(PY) benchmarks/match.py

# the matcher under PCRE 8.39 (Nmap 7.93's engine) and PCRE2 (7.95's), in one run; with the
# Debian 13 root (`make debian13-root`, not built here), its Nmap 7.95 file under PCRE2 too.
# BENCH_ARGS=--quick: 3 rounds instead of 15
DEBIAN13_ROOT ?= $(or $(VSCAND_DEBIAN13_ROOT),$(CURDIR)/.cache/debian13/root)
PROBES_795 ?= $(DEBIAN13_ROOT)/usr/share/nmap/nmap-service-probes
bench-engines: venv
	$(PY) benchmarks/match.py --engines $(if $(wildcard $(PROBES_795)),--probes-795 $(PROBES_795)) $(BENCH_ARGS)

# scan benchmarks (issue 3): vscan vs nmap -sV on ~55 loopback services (~6 min),
# then 10,000 ports in flight on 127.77.0.0/16 (~1 min)
bench-scan: venv
	$(PY) benchmarks/scan_vs_nmap.py
	$(PY) benchmarks/scale.py

# fast mode (issues 7, 15): nmap -sV -T4, vscan scan and vscan scan --fast, one after the
# other on 100 loopback services: the bench-scan services plus slow greeters, silent ports and
# openssl s_server (one connection at a time); ~8 min (nmap waits out the silent ports)
bench-fast: venv
	$(PY) benchmarks/fast_vs_nmap.py --mix slow

# the long chaos variants (tests/test_chaos.py with VSCAND_SOAK=1: 8,000 jobs under a
# kill -9 loop, 3,000 under Redis restarts, 3,500 under stalls/disconnects/OOM), ~5 min;
# then the hostile targets' soak variant (every case at intensity 7), ~4 min; then the
# Redis failover soak (tests/test_failover.py: 1,200 jobs through three Sentinel failovers
# per run, kill -9 and DEBUG SLEEP, with and without replica_confirm), ~6 min
soak: venv
	VSCAND_SOAK=1 $(PY) -b -m pytest -q -s tests/test_chaos.py
	VSCAND_SOAK=1 $(PY) -b -m pytest -q -s -m soak tests/test_failover.py
	VSCAND_SOAK=1 $(PY) -b -m pytest -q -m soak tests/hostile

clean:
	rm -rf $(VENV) .cache build *.egg-info
