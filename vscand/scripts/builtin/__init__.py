"""The built-in version scripts (one module each)."""
