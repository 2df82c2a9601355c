"""``python -m lit_lora``: sweep, report, merge and matrix are our own; the rest is LightningCLI."""

from __future__ import annotations

import importlib
import sys

from lit_lora.errors import LitLoraError
from lit_lora.runtime import quiet

OWN_COMMANDS = {
    "sweep": "lit_lora.sweep.command",
    "report": "lit_lora.report.command",
    "merge": "lit_lora.merge.command",
    "matrix": "lit_lora.matrix.command",
}

NO_MODEL_COMMANDS = ("sweep", "report", "-h", "--help")  # they load no model: no bitsandbytes either


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    quiet.install()  # before the libraries that print what a user cannot act on are imported
    if not args or args[0] not in NO_MODEL_COMMANDS:  # the commands that may load a quantised model
        quiet.import_bitsandbytes_without_hub_kernels()
    if args and args[0] in OWN_COMMANDS:
        try:
            importlib.import_module(OWN_COMMANDS[args[0]]).main(args[1:])
        except LitLoraError as err:
            print(f"lit_lora: error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        return
    from lit_lora.cli import main as cli_main

    try:
        cli_main(argv)
    finally:
        if args in (["-h"], ["--help"]):
            print("\nlit_lora's own commands: sweep (W&B sweep files, offline), report (tables and plots),")
            print("merge (LoRA adapters into one), matrix (every model on every task's test split);")
            print("see python -m lit_lora sweep|report|merge|matrix --help")


if __name__ == "__main__":
    main()
