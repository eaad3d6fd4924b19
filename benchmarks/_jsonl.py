"""The ``--json`` option shared by the benchmark scripts: append result records to a JSON-lines file."""

from __future__ import annotations

import json


def append_jsonl(path: str | None, *records: dict) -> None:
    """Append each record as one JSON line to ``path``; nothing when ``path`` is None."""
    if path is None:
        return
    with open(path, "a") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
