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


def test_budget_defaults_table_matches_the_code():
    """docs/budget.md's table of what a time budget sets: one row per field, its value as the code has it on CPU, and
    on other devices the step-budgeted default wherever the CPU's value is CPU-only."""
    from tinypretrain.config.budget import budget_settings

    page = (DOCS / "budget.md").read_text(encoding="utf-8")
    blocks = page.split("## Budget-aware defaults", 1)[1].split("\n\n")
    table = next(block for block in blocks if block.startswith("|"))
    rows = {}
    for line in table.splitlines()[2:]:
        field, default, budget, where = (cell.strip() for cell in line.strip("|").split("|"))
        rows[field.strip("`")] = (default, budget.split()[0].strip("`"), where)
    on_cpu, elsewhere = budget_settings(on_cpu=True), budget_settings(on_cpu=False)
    assert rows.keys() == on_cpu.keys()
    for name, (_, value, where) in rows.items():
        expected = on_cpu[name]
        assert (float(value) if isinstance(expected, float | int) else value) == expected, name
        assert where.startswith("CPU only") == (name not in elsewhere), name
