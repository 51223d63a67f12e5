"""Hostile targets on loopback (issue 7): servers that try to make a scanner hang, grow,
stall its reactor or lose its Redis lease, and the tests that scan them with a real
daemon and with ``vscan scan`` (``benchmarks/hostile_targets.py`` adds ``nmap -sV``)."""
