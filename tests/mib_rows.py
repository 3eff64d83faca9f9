"""Small task files in MIB's row format (hannamw/MIB-circuit-track MIB_circuit_track/dataset.py),
written by tests that read them (test_mib_profile's DAG run)."""
from __future__ import annotations

import json

from attrpatch.tasks import mib_files as M

NAMES = ("Mary", "John", "Alice", "Bob", "Ann", "Tom")


def ioi_row(io: str, s: str, c: str) -> dict:
    p = f"When {io} and {s} went to the store , {s} gave a drink to"
    return {"prompt": p, "metadata": {"indirect_object": io, "subject": s, "random_c": c},
            "s2_io_flip_counterfactual": {"prompt": f"When {io} and {s} went to the store , {io} gave a drink to"}}


def addition_row(a: int, b: int, a2: int) -> dict:
    return {"prompt": f"Q : What is {a} + {b} =", "label": a + b, "operator": "+",
            "random_counterfactual": {"prompt": f"Q : What is {a2} + {b} =", "label": a2 + b}}


def write_task(root, task: str, split: str, rows) -> None:
    f = root / M.file_of(task, split)
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def write_small_mib(root, n: int = 4) -> None:
    """IOI and arithmetic-addition, train and validation splits, `n` rows each."""
    for k, split in enumerate(("train", "validation")):
        write_task(root, "ioi", split, [ioi_row(NAMES[(i + k) % 6], NAMES[(i + k + 1) % 6], NAMES[(i + k + 2) % 6])
                                        for i in range(n)])
        write_task(root, "arithmetic_addition", split, [addition_row(i + k, 2, i + k + 3) for i in range(n)])
