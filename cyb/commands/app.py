"""`cyb app`: serve the Streamlit analysis app (app/main.py) locally over the DuckDB store."""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from ..flags import DEFAULT, add_db, add_device
from ..parser import CLIError, require

MAIN = Path(__file__).resolve().parents[2] / "app" / "main.py"
DESCRIPTION = (
    "Serve the Streamlit analysis app over the DuckDB store: runs and perplexity, the text "
    "coloured by pauses, latency, token types (Table 3), linguistic groups, calibration, exports and "
    "a Playground (score typed text, generate with pauses). It only reads the database, so `cyb eval` "
    "can write new evaluations while it runs; the Playground writes only when you click its Save."
)
DEVICE_HELP = (
    "where the Playground loads models, once per server, shared by every session: cpu, "
    "cuda, cuda:N, mps or auto"
)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be an integer in 1..65535, got {text!r}")
    return port


def _device(text: str) -> str:
    if not re.fullmatch(r"cpu|auto|mps|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(
            f"device must be cpu, cuda, cuda:N, mps or auto, got {text!r}"
        )
    return text


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "app", help="browse evaluations in a local web app", description=DESCRIPTION
    )
    add_db(p)
    p.add_argument("--port", type=_port, default=8501, help="port to listen on" + DEFAULT)
    host = "address to bind; 0.0.0.0 exposes the app to the network"
    p.add_argument("--host", default="127.0.0.1", help=host + DEFAULT)
    add_device(p, default="cpu", help=DEVICE_HELP + DEFAULT, type=_device)
    p.set_defaults(func=run)


def streamlit_command(host: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(MAIN),
        "--server.headless",
        "true",
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
    ]


def url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _playground_device(name: str) -> str:
    """The device the Playground loads models on; a GPU that is not there is refused here,
    before the server starts (torch is imported only for a device other than the CPU)."""
    if name == "cpu":
        return name
    from cyb_core.distributed import resolve_device

    try:
        return str(resolve_device(name))
    except ValueError as e:  # a device this machine lacks: refused before the server starts
        raise CLIError(str(e)) from None


def run(args) -> int:
    require("streamlit", "plotly", "duckdb", "pyarrow")  # the app extra (with analysis)
    from analysis.store import check_database

    db = check_database(args.db, write=False)  # a foreign or damaged --db: refused, no server
    device = _playground_device(args.device)
    env = {**os.environ, "CYB_DB": str(db.resolve()), "CYB_DEVICE": device}
    note = "" if db.is_file() else " (no database there yet: the app explains how to create one)"
    print(f"cyb app: {db}{note}", flush=True)
    print(f"cyb app: the Playground loads models on {device}", flush=True)
    print(f"cyb app: open {url(args.host, args.port)} (Ctrl-C stops it)", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"cyb app: warning: bound to {args.host}, reachable from other machines", flush=True)
    rc = _serve(streamlit_command(args.host, args.port), env)
    if rc not in (0, -signal.SIGINT, -signal.SIGTERM, 130):
        raise CLIError(f"streamlit exited with status {rc}")
    return 0


def _serve(cmd: list[str], env: dict) -> int:
    """Run the server until it exits; stop it with us, on Ctrl-C (which it also receives in a
    terminal) or SIGTERM."""
    proc = subprocess.Popen(cmd, env=env)
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        rc = proc.wait()
    except KeyboardInterrupt:
        rc = 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    return rc
