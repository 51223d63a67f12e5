"""Protocol code the version scripts share: pure (no Twisted), property-tested."""
