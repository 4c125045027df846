"""CPU detection: the kind that decides whether bf16 pays, from /proc/cpuinfo's flags."""

import pytest

from tinypretrain.utils.cpu import cpu_features


@pytest.mark.parametrize(("flags", "kind"), [
    ("fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile", "amx_bf16"),  # Sapphire Rapids and later Xeons
    ("fpu avx2 avx512f avx512_bf16", "avx512_bf16"),  # AMD EPYC Zen 4, Cooper Lake
    ("fpu avx2 avx512f", "avx512f"),
    ("fpu sse4_2 avx2", "avx2"),  # older EPYCs
    ("fpu sse4_2", "other"),
])
def test_the_kind_is_the_most_capable_extension_present(tmp_path, flags, kind):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: {flags}\n\nprocessor\t: 1\n"
                    f"model name\t: Test CPU 9000\nflags\t\t: {flags}\n")
    found = cpu_features.__wrapped__(str(info))
    assert found["model"] == "Test CPU 9000" and found["kind"] == kind
    assert set(found["flags"]) <= set(flags.split())


def test_without_cpuinfo_the_kind_is_unknown(tmp_path):
    assert cpu_features.__wrapped__(str(tmp_path / "missing"))["kind"] == "unknown"


def test_the_kind_for_device_rules_can_be_set_by_environment(monkeypatch):
    """TINYPRETRAIN_CPU_KIND replaces the detected kind for the device rules only; run.json's record stays real."""
    from tinypretrain.utils.cpu import BF16_CPU_KINDS, has_bf16_matmul

    for kind, bf16 in [("amx_bf16", True), ("avx512_bf16", True), ("avx512f", False), ("avx2", False)]:
        monkeypatch.setenv("TINYPRETRAIN_CPU_KIND", kind)
        assert has_bf16_matmul() is bf16
    monkeypatch.delenv("TINYPRETRAIN_CPU_KIND")
    assert has_bf16_matmul() == (cpu_features()["kind"] in BF16_CPU_KINDS)  # detected, as run.json's "cpu" records it
