"""A fixture result table shaped like a quickstart sweep on the host plus two phones, with values chosen
so that its Pareto sets, budget picks and flags can be checked by hand (see the comments)."""

from __future__ import annotations

import math

import pandas as pd

NAN = math.nan
K = 1024
HOST = {"model": "lenet5", "dataset": "mnist5k", "device": "host:x86_64", "format": "ptl", "seed": 0}
PHONE = {"model": "lenet5", "dataset": "mnist5k", "device": "adb", "format": "ptl", "seed": 0,
         "device_model": "Pixel 7", "device_soc": "gs201", "device_board": "panther", "device_abi": "arm64-v8a",
         "android": "14"}  # fmt: skip


def row(base: dict, technique: str, ratio: float, acc: float, gzip_k: float, p50: float, speedup: tuple, **extra):
    """One ok row; `speedup` = (point, lo, hi); reductions default to 1× (nothing removed)."""
    point, lo, hi = speedup
    values = {
        "technique": technique, "ratio": ratio, "status": "ok", "error": "", "acc_top1": acc,
        "acc_delta": acc - 0.970, "size_bytes": 250 * K, "size_gzip_bytes": gzip_k * K, "compression_x": 1.0,
        "latency_ms_p50": p50, "latency_ms_p50_lo": p50 * 0.98, "latency_ms_p50_hi": p50 * 1.02,
        "speedup_x": point, "speedup_x_lo": lo, "speedup_x_hi": hi, "macs_reduction_x": 1.0,
        "nonzero_reduction_x": 1.0,
    }  # fmt: skip
    values["speedup_efficiency"] = point / values["macs_reduction_x"]
    return base | values | extra


def quickstart_table() -> pd.DataFrame:
    """Host rows (flags in the comments), one failed row, and two phones (never mixed with the host)."""
    rows = [
        row(HOST, "none", NAN, 0.970, 230, 0.140, (1.0, 0.97, 1.03)),  # base: never flagged
        row(HOST, "prune_magnitude", 0.5, 0.972, 160, 0.141, (0.99, 0.95, 1.04), nonzero_reduction_x=2.0),
        # ^ within_noise; no_size_reduction
        row(HOST, "prune_magnitude", 0.9, 0.968, 60, 0.1207, (1.16, 0.90, 1.40), nonzero_reduction_x=10.0),
        # ^ within_noise; no_size_reduction
        row(HOST, "prune_channel", 0.5, 0.962, 64, 0.070, (2.0, 1.9, 2.1), macs_reduction_x=3.5,
            nonzero_reduction_x=3.6, size_bytes=70 * K, compression_x=3.6),  # no flag
        row(HOST, "prune_channel", 0.7, 0.945, 27, 0.045, (3.1, 3.0, 3.2), macs_reduction_x=8.0,
            nonzero_reduction_x=8.5, size_bytes=30 * K, compression_x=8.3),  # no flag; best under 3 pt
        row(HOST, "prune_channel", 0.9, 0.800, 4.5, 0.030, (4.6, 4.4, 4.8), macs_reduction_x=50.0,
            nonzero_reduction_x=55.0, size_bytes=5 * K, compression_x=50.0),  # accuracy_collapse
        row(HOST, "quant_dynamic", NAN, 0.966, 62, 0.160, (0.875, 0.85, 0.90), size_bytes=70 * K,
            compression_x=3.6),  # slower; dominated by prune_magnitude 0.9
        row(HOST, "cp", 0.5, 0.965, 120, 0.139, (1.01, 0.96, 1.06), macs_reduction_x=2.0,
            nonzero_reduction_x=2.1, size_bytes=125 * K, compression_x=2.0),  # within_noise; no_real_speedup
        HOST | {"technique": "tucker", "ratio": 0.9, "status": "failed",
                "error": "StageError: tucker: the decomposition produced NaN"},
        row(PHONE | {"device_serial": "R58M", "battery_temp_c_before": 31.0, "battery_temp_c_after": 33.5},
            "none", NAN, 0.970, 230, 2.10, (1.0, 0.98, 1.02)),
        row(PHONE | {"device_serial": "R58M", "battery_temp_c_before": 30.5, "battery_temp_c_after": 34.0},
            "prune_channel", 0.5, 0.962, 64, 0.90, (2.33, 2.2, 2.4), macs_reduction_x=3.5),
        row(PHONE | {"device_serial": "R58M", "battery_temp_c_before": 32.0, "battery_temp_c_after": 33.0},
            "quant_static", NAN, 0.969, 58, 3.00, (0.70, 0.60, 0.80)),  # slower
        row(PHONE | {"device_serial": "ZY22", "device_model": "moto g", "device_soc": "sm6375",
                     "battery_temp_c_before": 29.0, "battery_temp_c_after": 30.0},
            "none", NAN, 0.970, 230, 5.20, (1.0, 0.97, 1.03)),
    ]  # fmt: skip
    return pd.DataFrame(rows)


# What the fixture's rows must be flagged with, in table order.
EXPECTED_FLAGS = [
    "", "within_noise;no_size_reduction", "within_noise;no_size_reduction", "", "", "accuracy_collapse", "slower",
    "within_noise;no_real_speedup", "", "", "", "slower", "",
]  # fmt: skip
