"""The ``fastconv`` console script: ``fastconv train ...`` and ``fastconv bench ...``.

Each subcommand lives in its own module exposing ``main(argv) -> int``; this file
only routes to it, so a subcommand's imports (matplotlib, tqdm, ...) load only
when it runs.
"""
from __future__ import annotations

import importlib
import sys
from typing import List, Optional

#: subcommand -> (module with ``main(argv)``, one-line help)
COMMANDS = {
    "train": ("fastconv.train", "train a seed model (classifier, cifarnet, unet, segvit, denoiser, vae, cvae) "
                                "on fastconv kernels, on one process or many (torchrun)"),
    "bench": ("fastconv.bench", "time fastconv against SciPy, OpenCV and torch and print the speedup table"),
}


def _usage() -> str:
    lines = ["usage: fastconv <command> [options]", "", "commands:"]
    lines += [f"  {name:<8} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `fastconv <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"fastconv: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
