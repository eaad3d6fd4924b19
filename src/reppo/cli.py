"""``reppo`` command line: ``reppo train [flags]``.

Flags are the fields of :class:`reppo.config.Config` (tyro, hyphenated). ``--preset`` is applied first and any
other flag overrides it, whatever the order on the command line.
"""

from __future__ import annotations

import dataclasses
import sys

USAGE = """usage: reppo COMMAND [flags]

commands:
  train    train a policy with REPPO (reppo train --help lists every flag)
"""


def _int_fields() -> set[str]:
    from reppo.config import Config

    return {f.name.replace("_", "-") for f in dataclasses.fields(Config) if f.type in ("int", int)}


def _integral(value: str) -> str:
    """'5e6' -> '5000000' (so integer flags accept scientific notation); anything else unchanged."""
    try:
        number = float(value)
    except ValueError:
        return value
    return str(int(number)) if number.is_integer() and not value.lstrip("-").isdigit() else value


def _preprocess(args: list[str]) -> tuple[str, list[str]]:
    """Find --preset (default cpu) and accept scientific notation (5e6) for integer flags."""
    int_flags = _int_fields()
    preset, flag, out = "cpu", None, []
    for arg in args:
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            if eq:
                value = _integral(value) if name in int_flags else value
                preset = value if name == "preset" else preset
                out.append(f"--{name}={value}")
                flag = None
            else:
                out.append(arg)
                flag = name
            continue
        if flag in int_flags:
            arg = _integral(arg)
        elif flag == "preset":
            preset = arg
        out.append(arg)
        flag = None
    return preset, out


def _fail(message: str) -> int:
    print(f"reppo: error: {message}", file=sys.stderr)
    return 2


def train_command(args: list[str]) -> int:
    import tyro

    from reppo.config import Config, ConfigError, preset_config

    preset, args = _preprocess(args)
    try:
        default = preset_config(preset)
    except ConfigError as exc:
        return _fail(str(exc))
    config = tyro.cli(
        Config,
        default=default,
        args=args,
        prog="reppo train",
        description="Train a policy with REPPO on a MuJoCo Playground task.",
    )
    from reppo.envs import EnvLoadError, UnknownEnvError
    from reppo.train import train

    try:
        train(config)
    except (ConfigError, UnknownEnvError, EnvLoadError, OSError) as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        print("reppo: interrupted", file=sys.stderr)
        return 130
    return 0


COMMANDS = {"train": train_command}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        return _fail(f"unknown command {command!r}; allowed: {', '.join(COMMANDS)}")
    return COMMANDS[command](rest)


if __name__ == "__main__":
    sys.exit(main())
