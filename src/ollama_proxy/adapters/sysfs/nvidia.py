"""Read NVIDIA GPU state by running `nvidia-smi` and parsing its CSV.

Runs the configured command (`system.nvidia_smi`, split like a shell would, so a wrapper such
as `sudo -n nvidia-smi` works) with a timeout. A missing command, a failing driver, a timeout
or unparseable rows all mean "no GPU readings", never an exception. This module must not
judge the readings.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import logging
import math
import shlex

from ollama_proxy.core.system.telemetry import GpuReading

log = logging.getLogger(__name__)

QUERY_FIELDS = ("index", "name", "temperature.gpu", "power.draw", "fan.speed", "utilization.gpu",
                "clocks_throttle_reasons.active")
QUERY_ARGS = (f"--query-gpu={','.join(QUERY_FIELDS)}", "--format=csv,noheader,nounits")
DEFAULT_TIMEOUT_S = 5.0


async def read_nvidia(command: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[GpuReading, ...]:
    """Run `command` with the GPU query and parse its output; () when it cannot be had."""
    program = shlex.split(command)
    if not program:
        return ()
    argv = [*program, *QUERY_ARGS]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
    except OSError as exc:  # not installed, not executable: the common case on machines without NVIDIA
        log.debug("nvidia-smi unavailable (%s): %s", command, exc)
        return ()
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        await _reap(proc)
        log.warning("nvidia-smi did not answer within %.1fs; no GPU readings this time", timeout_s)
        return ()
    except asyncio.CancelledError:
        # The monitor is stopping mid-query: left alone the child outlives us, and its transport,
        # still open when the loop closes, warns (an error under the test suite's warning policy).
        await _reap(proc)
        raise
    if proc.returncode != 0:
        log.debug("nvidia-smi exited %s: %s", proc.returncode, stderr.decode(errors="replace").strip())
        return ()
    return parse_nvidia_csv(stdout.decode(errors="replace"))


async def _reap(proc: asyncio.subprocess.Process) -> None:
    """Kill the child and drain it, so its pipes and transport are closed before we return."""
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    await proc.communicate()


def parse_nvidia_csv(text: str) -> tuple[GpuReading, ...]:
    """Parse `--format=csv,noheader,nounits` rows; bad rows are skipped, `[N/A]` fields are None."""
    gpus = []
    for row in csv.reader(text.splitlines(), skipinitialspace=True):
        if len(row) != len(QUERY_FIELDS):
            continue
        index = _number(row[0])
        if index is None or not index.is_integer() or index < 0:
            continue
        gpus.append(GpuReading(
            index=int(index),
            name=row[1].strip(),
            celsius=_number(row[2]),
            power_watts=_number(row[3]),
            fan_percent=_number(row[4]),
            utilisation_percent=_number(row[5]),
            throttle_reasons=_bitmask(row[6]),
        ))
    return tuple(gpus)


def _number(field: str) -> float | None:
    # nvidia-smi prints "[N/A]", "[Not Supported]" or "N/A" where a value is unavailable.
    try:
        value = float(field.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _bitmask(field: str) -> int | None:
    try:
        return int(field.strip(), 16)
    except ValueError:
        return None
