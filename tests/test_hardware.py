"""Tests of pspnet.hardware's facts: the CPU's matrix units and whether bfloat16 pays."""

from __future__ import annotations

from pspnet.hardware import CPU_FEATURES, cpu_features, describe_machine, fast_bfloat16

SAPPHIRE_RAPIDS = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8 avx512_vnni
processor\t: 1
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8 avx512_vnni
"""
SKYLAKE = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n"


def test_cpu_features_are_read_from_the_flags_in_table_order():
    assert cpu_features(SAPPHIRE_RAPIDS) == list(CPU_FEATURES)
    assert cpu_features(SKYLAKE) == ["avx512f"]
    assert cpu_features("model name\t: something without flags\n") == []


def test_bfloat16_pays_on_amx_cpus_and_on_ampere_or_later_gpus():
    cpu = {"kind": "cpu", "device": "Xeon"}
    assert fast_bfloat16({**cpu, "cpu_features": cpu_features(SAPPHIRE_RAPIDS)})
    assert not fast_bfloat16({**cpu, "cpu_features": cpu_features(SKYLAKE)})
    # AVX-512 BF16 without AMX (Cooper Lake, Zen 4): dot products that oneDNN uses too
    assert fast_bfloat16({**cpu, "cpu_features": ["avx512_bf16", "avx512f"]})
    assert not fast_bfloat16({**cpu, "cpu_features": ["avx512f"]})
    assert not fast_bfloat16({**cpu})
    assert fast_bfloat16({"kind": "gpu", "device": "NVIDIA A10", "compute_capability": 8.6})
    assert not fast_bfloat16({"kind": "gpu", "device": "Tesla T4", "compute_capability": 7.5})
    assert fast_bfloat16({"kind": "gpu", "device": "NVIDIA H100 80GB HBM3", "compute_capability": None})
    assert not fast_bfloat16({"kind": "gpu", "device": "Tesla V100", "compute_capability": None})


def test_the_machine_description_carries_the_units_and_the_verdict():
    machine = describe_machine()
    assert set(machine["cpu_features"]) <= set(CPU_FEATURES)
    assert machine["bfloat16"] == fast_bfloat16(machine)
    if machine["kind"] == "cpu":
        assert machine["compute_capability"] is None
        assert machine["bfloat16"] == bool({"amx_bf16", "avx512_bf16"} & set(cpu_features()))
