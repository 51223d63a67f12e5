"""TARGET strings → port tasks, behind an allow/deny policy.

:mod:`~vscand.targets.parse` (strict TARGET syntax, pure), :mod:`~vscand.targets.policy`
(canonical addresses, the allow/deny policy, pure), :mod:`~vscand.targets.resolve`
(hostnames resolved once, Nmap's choice of a name's address, every target checked) and
:mod:`~vscand.targets.tasks` (port selection and the deduplicated, ordered tasks).
"""
