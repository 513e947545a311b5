"""torchrun, with a failed run said in one line.

    .venv/bin/python -m training.launch --nproc_per_node=2 -m training.train_adclick --schema avazu --data train.csv.gz

Takes torchrun's arguments (--help lists them) and makes the same elastic launch. When a process exits
non-zero, torchrun raises its ChildFailedError: a Python traceback of the launcher and a table of the
processes, printed after the trainer has already said what went wrong (a bar missed is one line and
exit 1 from every process, training/train_clicklog.py). Here that is one more line naming the process
and its exit code, and the launcher exits with that code.
"""

from __future__ import annotations

import sys

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import parse_args, run


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        run(args)
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        why = "its bar was missed or its data refused, as said above" if failure.exitcode in (1, 2) else "see above"
        print(f"error: {e.name}: process {rank} exited with code {failure.exitcode} ({why})", file=sys.stderr)
        return failure.exitcode if failure.exitcode > 0 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
