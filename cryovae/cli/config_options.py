"""Command-line options made from config dataclasses, and a command whose help is grouped.

A config field with :func:`cryovae.models.option` metadata (``{"cli": {...}}``) becomes a click
option whose default is None ("the config's default") and whose help ends with that default,
per model where the registered models differ (``[target 128, spatial 256]``). The values given
are passed back as overrides of the config, so a default is written once: in the dataclass.
"""

from __future__ import annotations

import dataclasses

import click

from cryovae.errors import CryovaeError


class GroupedCommand(click.Command):
    """A click command that prints its options in titled sections (as topaz groups its help):
    each option's ``help_group`` attribute names its section, in order of first appearance."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                sections.setdefault(getattr(param, "help_group", "Other options"), []).append(record)
        for title, rows in sections.items():
            with formatter.section(title):
                formatter.write_dl(rows)


def _fmt(value) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def parse_int_list(value: str | None, flag: str) -> tuple[int, ...] | None:
    """``"500,500"`` -> ``(500, 500)``; a one-line CryovaeError naming ``flag`` otherwise."""
    if value is None:
        return None
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise CryovaeError(f"{flag} expects comma-separated integers, got {value!r}") from None


def field_option(f: dataclasses.Field, defaults: dict[str, object], group: str) -> click.Option:
    """The click option of config field ``f`` (with ``option`` metadata).

    defaults : label -> the field's default in each config that has it (``{"target": 128, ...}``;
        one label, or equal values, print as one default).
    """
    spec = f.metadata["cli"]
    flag, help_text = spec["flag"], spec["help"]
    if str(f.type) == "bool":  # a flag says what it does; a pair shows which side is the default
        defaults = {k: (flag.split("/")[0 if v else 1].lstrip("-") if "/" in flag else None)
                    for k, v in defaults.items()}
    shown = {label: _fmt(v) for label, v in defaults.items() if v is not None}
    if len(set(shown.values())) == 1:
        help_text += f"  [default: {next(iter(shown.values()))}]"
    elif shown:
        help_text += "  [" + ", ".join(f"{k} {v}" for k, v in shown.items()) + "]"
    kind = str(f.type)
    kwargs: dict = {"default": None, "help": help_text}
    if spec["flag_value"] is not None:
        kwargs.update(is_flag=True, flag_value=spec["flag_value"])
    elif "/" in flag:
        kwargs.update(is_flag=True)
    elif spec["choices"]:
        kwargs["type"] = click.Choice(list(spec["choices"]))
    elif kind.startswith("tuple"):
        kwargs["type"] = str
        kwargs["metavar"] = "N,N,..."
    elif kind.startswith("int"):
        kwargs["type"] = int
    elif kind.startswith("float"):
        kwargs["type"] = float
    else:
        kwargs["type"] = str
    opt = click.Option([flag, f.name], **kwargs)
    opt.help_group = group  # type: ignore[attr-defined]
    return opt


def config_overrides(cls, values: dict) -> dict:
    """The given (non-None) values of ``cls``'s option fields, tuples parsed."""
    out = {}
    for f in dataclasses.fields(cls):
        v = values.get(f.name)
        if v is None or "cli" not in f.metadata:
            continue
        out[f.name] = parse_int_list(v, f.metadata["cli"]["flag"]) if str(f.type).startswith("tuple") else v
    return out
