"""The host's CPU in the benchmark identity and the row: model and kernel-relevant ISA features parsed from real
/proc/cpuinfo texts; other processes' CPU time during a session from /proc/stat."""

from __future__ import annotations

from pathlib import Path

from adb_bench.cpu import cpu_features, cpu_model

DATA = Path(__file__).parent / "data"


def test_x86_cpuinfo_gives_the_model_and_its_vector_features():
    text = (DATA / "cpuinfo_x86_amd_epyc.txt").read_text()  # this project's CI host: AVX2, no AVX-512
    assert cpu_model(text) == "AMD EPYC"
    assert cpu_features(text) == "avx avx2 fma f16c"


def test_x86_flags_with_avx512_vnni_and_amx_are_listed_in_a_fixed_order():
    text = (DATA / "cpuinfo_x86_amd_epyc.txt").read_text()
    text = text.replace(" fsrm\n", " fsrm amx_int8 avx512f avx512_vnni amx_tile avx512bw\n", 1)
    assert cpu_features(text) == "avx avx2 fma f16c avx512f avx512bw avx512_vnni amx_tile amx_int8"


def test_arm64_cpuinfo_has_no_model_name_so_the_part_names_it():
    text = (DATA / "cpuinfo_arm64_neoverse_v1.txt").read_text()
    assert cpu_model(text) == "ARM part 0xd40"
    assert cpu_features(text) == "asimd asimdhp asimddp i8mm bf16 sve svei8mm"
    assert cpu_model("processor\t: 0\nHardware\t: BCM2835\n") == "BCM2835" and cpu_model("") is None
