"""The docs' field table is generated from PretrainConfig; this test fails when they drift apart."""

from pathlib import Path

from tinypretrain.config.fields import fields_table
from tinypretrain.config.pretrain import PretrainConfig

DOC = Path(__file__).resolve().parents[1] / "docs" / "pretrain.md"


def test_field_table_matches_the_code():
    assert fields_table(PretrainConfig) in DOC.read_text(encoding="utf-8"), (
        "docs/pretrain.md's field table differs from PretrainConfig: regenerate it with "
        "`python docs/write_tables.py`."
    )


def test_every_declared_field_has_help():
    for name in PretrainConfig.__annotations__:
        assert PretrainConfig.__dataclass_fields__[name].metadata.get("help"), name
