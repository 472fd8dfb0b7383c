"""A real Prometheus server on loopback for tests (Debian's ``prometheus`` package)."""
