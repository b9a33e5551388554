"""adb_bench.transport and `cli.py devices` through the real adb client against emulated phones."""

from __future__ import annotations

import sys

import pytest
from adb_emulator.harness import attached_phone

import cli
from adb_bench.errors import DeviceError
from adb_bench.transport import Adb, parse_devices


@pytest.fixture(params=[True, False], ids=["shell_v2", "no_shell_v2"])
def phone(request, server, tmp_path):
    with attached_phone(server, tmp_path / "phone", shell_v2=request.param) as attached:
        yield attached


def adb_for(server, phone) -> Adb:
    return Adb("adb", phone.serial, port=server.port, timeout_s=30)


def test_exit_codes_and_output_with_and_without_shell_v2(server, phone):
    result = adb_for(server, phone).shell(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert result.code == 3
    if phone.shell_v2:
        assert (result.out, result.err) == ("out\n", "err\n")
    else:
        assert result.out.split() == ["out", "err"]  # the old shell merges stderr into stdout
        assert server("-s", phone.serial, "shell", "exit 3").returncode == 0  # adb alone cannot tell
    assert adb_for(server, phone).shell(["true"]).code == 0


def test_arguments_cannot_start_a_second_command(server, phone):
    hostile = ["a; touch pwned1", "$(touch pwned2)", "`touch pwned3`", "it's \"quoted\"", "x && touch pwned4 | cat",
               "-n", "a\nb; touch pwned5"]  # fmt: skip
    result = adb_for(server, phone).shell(["printf", "%s\\n", *hostile])
    assert result.code == 0 and result.out == "".join(f"{h}\n" for h in hostile)
    assert not list(phone.root.rglob("pwned*"))  # the shell's working directory is the phone's root


def test_push_lands_intact_at_an_awkward_path(server, phone, tmp_path):
    local = tmp_path / "model file.ptl"
    local.write_bytes(bytes(range(256)) * 300)  # more than one 64K DATA chunk
    remote = "/data/local/tmp/pb dir/it's; here.ptl"
    adb_for(server, phone).push(local, remote)
    assert phone.local(remote).read_bytes() == local.read_bytes()
    assert adb_for(server, phone).remote_sha256("/data/local/tmp/missing") is None


def test_serial_selection_errors(server, tmp_path):
    with pytest.raises(DeviceError, match="no device attached"):
        Adb("adb", port=server.port).select()
    with attached_phone(server, tmp_path / "a") as first:
        assert Adb("adb", port=server.port).select() == first.serial  # the only one: no serial needed
        with attached_phone(server, tmp_path / "b") as second, pytest.raises(DeviceError, match=second.serial):
            Adb("adb", port=server.port).select()
        with pytest.raises(DeviceError, match="is not attached"):
            Adb("adb", "127.0.0.1:1", port=server.port).select()
    with attached_phone(server, tmp_path / "c", authorized=False) as locked, pytest.raises(DeviceError) as info:
        Adb("adb", locked.serial, port=server.port).select()
    assert "unauthorized: unlock it and accept" in str(info.value)


def test_adb_missing_says_how_to_install():
    with pytest.raises(DeviceError, match="apt-get install adb"):
        Adb("/no/such/adb")


def test_cli_devices_lists_phones(server, tmp_path, monkeypatch, capsys):
    with attached_phone(server, tmp_path / "ok"), attached_phone(server, tmp_path / "no", authorized=False):
        monkeypatch.setattr(sys, "argv", ["cli.py", "devices", f"device.server_port={server.port}"])
        with pytest.raises(SystemExit) as done:
            cli.main()
    out = capsys.readouterr().out
    assert done.value.code == 0
    ready = next(line for line in out.splitlines() if line.split()[1:2] == ["device"] and line[0] != " ")
    assert ready.split()[2:] == ["Pixel", "Emu", "EMU8450", "emu8450", "arm64-v8a", "14", "31.2", "usb"]
    assert " unauthorized" in out and "is unauthorized: unlock it and accept the 'Allow USB debugging' prompt" in out


def test_adb_devices_long_format_from_the_real_client(server, tmp_path):
    with attached_phone(server, tmp_path / "ok") as ready, attached_phone(server, tmp_path / "no", authorized=False):
        serial, listed = ready.serial, {d.serial: d for d in parse_devices(server("devices", "-l").stdout)}
    assert listed[serial].state == "device" and listed[serial].attributes["model"] == "Pixel_Emu"
    assert {"product", "device", "transport_id"} <= set(listed[serial].attributes)
    assert [d.state for s, d in listed.items() if s != serial] == ["unauthorized"]
