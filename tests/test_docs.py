"""The docs' field tables are generated from the config dataclasses; this test fails when they drift apart."""

from pathlib import Path

import pytest

from tinypretrain import PretrainConfig, SFTConfig
from tinypretrain.config.fields import fields_table

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.parametrize(("config_class", "page"), [(PretrainConfig, "pretrain.md"), (SFTConfig, "sft.md")])
def test_field_table_matches_the_code(config_class, page):
    assert fields_table(config_class) in (DOCS / page).read_text(encoding="utf-8"), (
        f"docs/{page}'s field table differs from {config_class.__name__}: regenerate it with "
        "`python docs/write_tables.py`."
    )


@pytest.mark.parametrize("config_class", [PretrainConfig, SFTConfig])
def test_every_declared_field_has_help(config_class):
    for name in config_class.__annotations__:
        assert config_class.__dataclass_fields__[name].metadata.get("help"), name
