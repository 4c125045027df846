"""Helpers any layer may use: atomic file writes, memory release, statistics, tables and figures,
and hub checks that fail fast offline."""
