"""The command line: ``geo-pe-train`` (console script), ``python -m train``, ``accelerate launch -m train``.

    geo-pe-train --config quickstart [--key value ...]                  # one process
    geo-pe-train --num_processes 2 --config quickstart [--key value ...]  # several, through accelerate

A bad config, bad data or an unusable checkpoint prints one line ``error: ...`` naming the key and exits
with status 2, before anything is written. With ``--num_processes`` above 1, ``geo-pe-train`` runs every
check first (`train.checks.preflight`) and only then starts the processes with ``accelerate launch``, so a
mistake is reported once; under a bare ``accelerate launch -m train`` the line is printed by the main
process only, but the launcher turns the status into 1 and adds its own traceback (``accelerate launch
-q`` drops it for one process).

``geo-pe-train`` runs the installed package from any directory; ``python -m train`` and ``accelerate
launch -m train`` import ``train`` from the working directory first, so a ``train.py`` or ``train/`` of
your own there shadows it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from train.checkpoint import CheckpointError
from train.validation import ConfigError

__all__ = ["launch_script", "main", "report_error"]

_LAUNCHED = "GEO_PE_LAUNCHED"  # set in the processes that geo-pe-train starts


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def report_error(err: Exception) -> int:
    """Print ``error: ...`` once (main process) and return the exit status 2."""
    if _is_main_process():
        print(f"error: {err}", file=sys.stderr)
    return 2


def run(argv: list[str]) -> int:
    """Train in this process (one of several when a launcher started it)."""
    from train.config import load_config
    from train.loop import train

    try:
        train(load_config(argv))
    except (ConfigError, CheckpointError) as err:
        return report_error(err)
    return 0


def launch(num_processes: int, argv: list[str]) -> int:
    """Check everything here, then start ``num_processes`` processes with ``accelerate launch``."""
    from train.checks import preflight
    from train.config import load_config

    try:
        preflight(load_config(argv), num_processes)
    except (ConfigError, CheckpointError) as err:
        return report_error(err)
    return launch_script("geo-pe-train", num_processes, argv)


def launch_script(name: str, num_processes: int, argv: list[str]) -> int:
    """Run the console script ``name`` in ``num_processes`` processes with ``accelerate launch``."""
    script = Path(sys.executable).with_name(name)
    command = str(script) if script.is_file() else shutil.which(name)
    if command is None:
        return report_error(
            ConfigError(f"num_processes: the {name} script is not installed (pip install geo-pe)")
        )
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "1"]
    launcher += ["--num_processes", str(num_processes), "--main_process_port", str(_free_port())]
    launcher += ["--mixed_precision", "no", "--dynamo_backend", "no", "--no_python", command, *argv]
    return subprocess.run(launcher, env={**os.environ, _LAUNCHED: "1"}, check=False).returncode


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--num_processes", type=int, default=1)
    known, rest = parser.parse_known_args(argv)
    if "-h" in rest or "--help" in rest:
        from train.config import load_config

        print("geo-pe-train [--num_processes N] [--config NAME_OR_FILE] [--key value ...]\n")
        try:
            load_config(rest)  # argparse prints the help of every key and exits
        except ConfigError as err:
            return report_error(err)
        return 0
    if known.num_processes < 1:
        problem = f"num_processes: expected a positive integer, got {known.num_processes}"
        return report_error(ConfigError(problem))
    if known.num_processes == 1 or os.environ.get(_LAUNCHED):
        return run(rest)
    return launch(known.num_processes, rest)
