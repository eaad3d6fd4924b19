"""Child process of one benchmark run: ``python -m reppo.bench.worker FOLDER``.

Reads ``FOLDER/spec.json`` (a :class:`reppo.bench.runners.RunSpec`), runs it, and appends JSON lines to
``FOLDER/records.jsonl``: one ``{"kind": "eval", "seed", "env_steps", "wall_s", "eval_return"}`` per evaluation
(flushed at once, so a crash keeps the points before it) and, when the run finishes, one ``{"kind": "done",
"compile_s", "device_peak_bytes", "settings", "note"}``. A failure exits non-zero with the traceback on stderr.
Running in its own process gives the run its own peak host RSS and keeps a crash away from the harness.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

SPEC_FILE = "spec.json"
RECORDS_FILE = "records.jsonl"
MENAGERIE_ENV = "REPPO_MENAGERIE_PATH"
"""A folder of MuJoCo Menagerie robot models (``booster_t1/``, ...) that Playground reads instead of its own
``external_deps/mujoco_menagerie`` (which it would git-clone): set by ``scripts/gpu-evidence.sh`` from the bundle."""


def use_menagerie_path() -> Path | None:
    """Point Playground's ``mjx_env.MENAGERIE_PATH`` at ``$REPPO_MENAGERIE_PATH`` when it is set; return it."""
    path = os.environ.get(MENAGERIE_ENV)
    if not path:
        return None
    from etils import epath
    from mujoco_playground._src import mjx_env

    mjx_env.MENAGERIE_PATH = epath.Path(path)
    return Path(path)


def read_spec(folder: Path):
    from reppo.bench.runners import RunSpec

    values = json.loads((folder / SPEC_FILE).read_text())
    return RunSpec(**{**values, "seeds": tuple(values["seeds"])})


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    folder = Path(argv[0])
    spec = read_spec(folder)

    from reppo.bench.runners import RUNNERS, device_peak_bytes
    from reppo.training import enable_compilation_cache

    enable_compilation_cache()
    use_menagerie_path()
    with open(folder / RECORDS_FILE, "a") as fh:

        def emit(record: dict[str, Any]) -> None:
            fh.write(json.dumps(record) + "\n")
            fh.flush()

        facts = RUNNERS[spec.method](spec, emit)
        emit({"kind": "done", "device_peak_bytes": device_peak_bytes(), **facts})
    return 0


if __name__ == "__main__":
    sys.exit(main())
