"""nvidia-smi CSV parsing and the subprocess reader, with a fake nvidia-smi script."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import pytest
from fake_sysfs import make_script

from ollama_proxy.adapters.sysfs.nvidia import parse_nvidia_csv, read_nvidia
from ollama_proxy.core.system.telemetry import GpuReading

# The query the issue specifies, spelled out so that a change to the reader's arguments shows here.
QUERY = ("--query-gpu=index,name,temperature.gpu,power.draw,fan.speed,utilization.gpu,"
         "clocks_throttle_reasons.active --format=csv,noheader,nounits")
ROWS = """0, NVIDIA GeForce RTX 4070 Laptop GPU, 67, 85.31, 45, 98, 0x0000000000000004
1, Tesla T4, [N/A], [N/A], [Not Supported], 0, 0x0000000000000001
"""
RTX = GpuReading(0, "NVIDIA GeForce RTX 4070 Laptop GPU", 67.0, 85.31, 45.0, 98.0, 0x4)
T4 = GpuReading(1, "Tesla T4", None, None, None, 0.0, 0x1)


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param(ROWS, (RTX, T4), id="two-gpus-with-na"),
    pytest.param("", (), id="empty"),
    pytest.param("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n", (),
                 id="driver-error-text"),
    pytest.param("0, short, row\n" + ROWS.splitlines()[0], (RTX,), id="wrong-column-count-skipped"),
    pytest.param("x, GPU, 1, 2, 3, 4, 0x0\n-1, GPU, 1, 2, 3, 4, 0x0\n", (), id="bad-index-skipped"),
    pytest.param("0, GPU, nan, inf, 50, 1, not-hex\n", (GpuReading(0, "GPU", None, None, 50.0, 1.0, None),),
                 id="non-finite-and-bad-mask"),
    pytest.param('0, "Quadro, Special", 40, 20, 30, 5, 0x0\n',
                 (GpuReading(0, "Quadro, Special", 40.0, 20.0, 30.0, 5.0, 0),), id="quoted-name"),
])
def test_parse_nvidia_csv(text: str, expected: tuple[GpuReading, ...]) -> None:
    assert parse_nvidia_csv(text) == expected


def fake_smi(tmp_path: Path, rows: str = ROWS, status: int = 0) -> Path:
    # Answers only when called with exactly the query the reader must send.
    return make_script(tmp_path / "nvidia-smi", f"""
if [ "$*" != {shlex.quote(QUERY)} ]; then echo "unexpected args: $*" >&2; exit 2; fi
printf '%s' {shlex.quote(rows)}
exit {status}
""")


async def test_reads_gpus_from_the_command(tmp_path: Path) -> None:
    assert await read_nvidia(str(fake_smi(tmp_path))) == (RTX, T4)


async def test_command_may_carry_a_wrapper(tmp_path: Path) -> None:
    script = fake_smi(tmp_path)
    assert await read_nvidia(f"/bin/sh {shlex.quote(str(script))}") == (RTX, T4)


@pytest.mark.parametrize("command", [
    pytest.param("{tmp}/nonexistent/nvidia-smi", id="missing"),
    pytest.param("", id="empty"),
    pytest.param("{tmp}/plain-file", id="not-executable"),
])
async def test_absent_command_gives_no_gpus(tmp_path: Path, command: str) -> None:
    (tmp_path / "plain-file").write_text(ROWS)
    assert await read_nvidia(command.format(tmp=tmp_path)) == ()


async def test_failing_driver_gives_no_gpus(tmp_path: Path) -> None:
    assert await read_nvidia(str(fake_smi(tmp_path, "NVIDIA-SMI has failed", status=9))) == ()


async def test_hung_command_times_out(tmp_path: Path) -> None:
    script = make_script(tmp_path / "nvidia-smi", "exec sleep 30")
    started = time.monotonic()
    assert await read_nvidia(str(script), timeout_s=0.2) == ()
    assert time.monotonic() - started < 5
