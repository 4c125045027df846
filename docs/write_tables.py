"""Regenerate the tables in docs/ that come from the code: python docs/write_tables.py (tests/test_docs.py fails
when a table and the code differ)."""

from pathlib import Path

from tinypretrain import PretrainConfig, SFTConfig
from tinypretrain.config.fields import write_fields_table

if __name__ == "__main__":
    docs = Path(__file__).resolve().parent
    write_fields_table(PretrainConfig, docs / "pretrain.md")
    write_fields_table(SFTConfig, docs / "sft.md")
