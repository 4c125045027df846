"""Regenerate the tables in docs/ that come from the code: python docs/write_tables.py (tests/test_docs.py fails
when a table and the code differ)."""

from pathlib import Path

from tinypretrain import PretrainConfig
from tinypretrain.config.fields import write_fields_table

if __name__ == "__main__":
    write_fields_table(PretrainConfig, Path(__file__).resolve().parent / "pretrain.md")
