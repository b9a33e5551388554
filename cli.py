"""pocketbench: `python cli.py [overrides]` runs one variant, `-m` a sweep, `report DIR` rebuilds a table,
`devices` lists the attached phones."""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from adb_bench.errors import DeviceError
from adb_bench.listing import device_rows, format_rows
from compress.config import build, check_ratio
from compress.errors import StageError, UserError
from compress.pipeline import run_variant
from compress.results import any_failed, fail, first_columns, summarize, write_result
from compress.search import register_resolver, trial_values
from compress.techniques.torch_ao import silence_deprecations

CONF = Path(__file__).resolve().parent / "conf"
log = logging.getLogger("pocketbench")


def check_overrides(overrides: list[str]) -> None:
    """Catch the common mistakes before Hydra starts: an unknown config choice, a ratio outside [0, 1)."""
    for arg in overrides:
        match = re.fullmatch(r"([a-z_]+)=([\w,.-]+)", arg)
        if match and match[1] == "ratio":
            for value in match[2].split(","):
                check_ratio(_number(value))
        if not match or not (CONF / match[1]).is_dir():
            continue
        valid = sorted(p.stem for p in (CONF / match[1]).glob("*.yaml"))
        for choice in match[2].split(","):
            if choice not in valid:
                raise UserError(f"unknown {match[1]} {choice!r}; choose one of: {', '.join(valid)}")


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def run(cfg: DictConfig) -> list[float] | None:
    """One variant → `result.json` in the job dir; a failure is a row, never a crashed sweep. Under
    `sweep=search` it returns the trial's objectives to Optuna."""
    silence_deprecations()
    job_dir = Path(HydraConfig.get().runtime.output_dir)
    row = first_columns(cfg, str(job_dir))
    try:
        run_variant(cfg, build(cfg.device), row)
    except Exception as exc:  # noqa: BLE001 — every failure becomes a row
        fail(row, exc)
    write_result(row, job_dir)
    if HydraConfig.get().mode == RunMode.RUN and any_failed(summarize(job_dir)):
        sys.exit(1)
    return trial_values(cfg.search, row) if cfg.get("search") is not None else None


def report(folder: str) -> int:
    """Rebuild summary.csv from whatever result.json files exist under `folder`."""
    if not Path(folder).is_dir():
        raise UserError(f"no such directory {folder!r}; pass a sweep dir such as outputs/sweeps/DATE/TIME")
    table = summarize(Path(folder))
    return 1 if table.empty or any_failed(table) else 0


def devices(overrides: list[str]) -> int:
    """`devices [device.adb=... device.server_host=... device.server_port=...]`: the attached phones."""
    node = OmegaConf.load(CONF / "device" / "adb.yaml")
    node.merge_with_dotlist([arg.removeprefix("device.") for arg in overrides])
    print(format_rows(device_rows(node.adb, node.server_host, node.server_port)))
    return 0


def main() -> None:
    args = sys.argv[1:]
    try:
        if args[:1] == ["report"]:
            if len(args) != 2:
                raise UserError("usage: python cli.py report SWEEP_DIR")
            sys.exit(report(args[1]))
        if args[:1] == ["devices"]:
            sys.exit(devices(args[1:]))
        if args[:1] == ["sensitivity"]:
            from compress.commands.sensitivity import command  # matplotlib and Hydra's compose load only for it

            check_overrides(args[1:])
            sys.exit(command(args[1:]))
        check_overrides(args)
    except (UserError, DeviceError, StageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    register_resolver()
    run()


if __name__ == "__main__":
    main()
