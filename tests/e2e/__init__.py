"""End-to-end differential tests: vscan scan against nmap -sV on real loopback services."""
