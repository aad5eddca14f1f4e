"""The gateway's cost per request, for deciding a change: CPU time or callgrind instructions.

    python -m bench.probe [--src PATH] [--requests N] [--stream] [--chunks N] [--callgrind | --ttfc]

Starts the OpenAI-compatible emulator and `chatbridge serve` from `--src` (a checkout's `src/`,
put first on the gateway's PYTHONPATH; default: this checkout), sends `--requests` sequential
requests after a warm-up and prints the gateway's CPU µs per request, or with `--callgrind` its
instructions per request (valgrind counting only the measured requests: deterministic, so a
change of a few percent shows; the machine's load does not move it), less what the same time
without requests costs (timers and background tasks, which run as often under valgrind's
slowdown as at full speed and would otherwise be counted many times over). `--ttfc`: the median time
to the first `data:` event of `--requests` streams, one at a time, instead.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from bench import load, procs

ROOT = Path(__file__).resolve().parent.parent


async def _requests(url: str, body: bytes, headers: dict[str, str], count: int) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}: {await response.text()}")


def _callgrind_total(out_file: Path) -> int:
    text = out_file.read_text(errors="replace")
    match = re.search(r"^totals:\s*(\d+)", text, re.M)
    if match is None:
        raise RuntimeError(f"no totals in {out_file}")
    return int(match.group(1))


def _dump(out_file: Path, number: int) -> Path:
    """The file of the `number`th dump `callgrind_control -d` asked for (named `<file>.<n>`, or with a pid)."""
    candidates = sorted(out_file.parent.glob(f"{out_file.name}*.{number}"))
    if not candidates:
        raise RuntimeError(f"no callgrind dump {number} next to {out_file}")
    return candidates[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=ROOT / "src")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--chunks", type=int, default=200, help="content chunks of a streamed answer")
    parser.add_argument("--callgrind", action="store_true")
    parser.add_argument("--ttfc", action="store_true", help="time to first chunk of streams (implies --stream)")
    parser.add_argument("--cprofile", type=Path, help="write a cProfile of the measured requests to this file")
    parser.add_argument("--floor", action="store_true",
                        help="measure the minimal proxy (bench/floor.py: uvicorn + aiohttp passing bytes) instead of the gateway")
    args = parser.parse_args(argv)
    args.stream = args.stream or args.ttfc
    work = Path(tempfile.mkdtemp(prefix="bench-probe-"))
    upstream = procs.openai_emulator("probe-upstream", None, chunks=args.chunks, log_dir=work).start().wait_ready()
    if args.floor:
        gateway = procs.floor_proxy("probe-floor", None, upstream=upstream, log_dir=work)
    else:
        gateway = procs.gateway("probe-gateway", None, openai_upstream=upstream, work_dir=work, log_dir=work,
                                src=args.src.resolve())
    if args.cprofile:
        gateway.argv = [sys.executable, "-m", "bench.profiled", str(args.cprofile.resolve()), *gateway.argv[1:]]
        gateway.env["PYTHONPATH"] = f"{args.src.resolve()}{os.pathsep}{ROOT}"
    out_file = work / "callgrind.out"
    if args.callgrind:
        if shutil.which("valgrind") is None:
            raise SystemExit("valgrind is not installed")
        gateway.argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out_file}",
                        *gateway.argv]
    try:
        gateway.start().wait_ready(timeout=600)
        url = gateway.base_url + "/v1/chat/completions"
        body = load.chat_body(procs.STREAM_MODEL if args.stream else procs.MODEL, stream=args.stream)
        headers = load.auth_headers(procs.API_KEY)
        asyncio.run(_requests(url, body, headers, args.warmup))
        if args.callgrind:
            subprocess.run(["callgrind_control", "-i", "on", str(gateway.pid)], check=True, capture_output=True)
        if args.cprofile:
            os.kill(gateway.pid, signal.SIGUSR1)
        streams = None
        cpu, started = gateway.cpu_seconds(), time.perf_counter()
        if args.ttfc:
            streams = asyncio.run(load.measure_streams(url, body, headers, args.requests))
        else:
            asyncio.run(_requests(url, body, headers, args.requests))
        cpu, wall = gateway.cpu_seconds() - cpu, time.perf_counter() - started
        if args.callgrind:  # the same time again without requests: what timers and background tasks cost
            subprocess.run(["callgrind_control", "-d", str(gateway.pid)], check=True, capture_output=True)
            time.sleep(wall)
            subprocess.run(["callgrind_control", "-d", str(gateway.pid)], check=True, capture_output=True)
            subprocess.run(["callgrind_control", "-i", "off", str(gateway.pid)], check=True, capture_output=True)
        if args.cprofile:
            os.kill(gateway.pid, signal.SIGUSR2)
            time.sleep(1.0)
    finally:
        gateway.stop()
        upstream.stop()
    kind = f"streamed ({args.chunks} chunks)" if args.stream else "non-streamed"
    if args.floor:
        kind += ", the minimal proxy"
    if streams is not None:
        print(f"time to first chunk: median {streams.ttfc_ms:.3f} ms over {streams.streams} streams "
              f"({streams.errors} errors; {args.src})")
    elif args.callgrind:
        measured, idle = _callgrind_total(_dump(out_file, 1)), _callgrind_total(_dump(out_file, 2))
        print(f"{kind}: {(measured - idle) / args.requests / 1000:.1f}k instructions/request "
              f"(+{idle / args.requests / 1000:.1f}k of background work in the same time; {args.src})")
    else:
        print(f"{kind}: {cpu / args.requests * 1e6:.0f} µs CPU/request, {wall / args.requests * 1e3:.3f} ms each ({args.src})")
    if not os.environ.get("KEEP_PROBE"):
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
