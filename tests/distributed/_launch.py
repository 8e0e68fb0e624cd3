"""Run several ``flatkit`` command lines, one after the other, inside ONE torchrun process group (so a test pays
the launch once): ``torchrun ... tests/distributed/_launch.py RESULT.json ARGS.json``.

ARGS.json holds a list of argument lists; every rank runs each through the click group (as
``python -m flatkit.cli`` would) and rank 0 writes the exit codes to RESULT.json.
"""

import json
import sys


def main() -> None:
    from flatkit import distributed as dist
    from flatkit.cli import main as cli

    result, args = sys.argv[1], json.loads(open(sys.argv[2]).read())
    codes = []
    for a in args:
        code = cli.main(a, prog_name="flatkit", standalone_mode=False)
        codes.append(int(code or 0))
    if dist.is_main():
        with open(result, "w") as f:
            json.dump(codes, f)


if __name__ == "__main__":
    main()
