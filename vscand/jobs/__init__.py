"""Scan jobs: the format (schema), decoding, field checks, identity, signatures, parse_job.

A job is checked whole before any socket is opened; see :mod:`vscand.jobs.parse`.
"""
