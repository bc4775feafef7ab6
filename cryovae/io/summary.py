"""A summary of a particle file: count, box, pixel size, optics groups, stacks, CTF columns
(what ``cryovae info`` prints), as a JSON-ready dict and as text lines."""

from __future__ import annotations

import numpy as np

from cryovae.io.particle_stack import ParticleStack

#: CTF columns a summary looks for (RELION names)
SUMMARY_CTF_COLUMNS = ("rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnVoltage", "rlnSphericalAberration",
               "rlnAmplitudeContrast", "rlnPhaseShift", "rlnCtfBfactor", "rlnCtfScalefactor")


def summarize(stack: ParticleStack) -> dict:
    """A JSON-ready summary of a :class:`cryovae.io.ParticleStack`."""
    sizes = None if stack.pixel_sizes is None else sorted({round(float(v), 6) for v in np.unique(stack.pixel_sizes)})
    return {
        "path": str(stack.path),
        "source_kind": stack.source_kind,
        "relion_version": stack.relion_version,
        "n_particles": len(stack),
        "box": stack.box_known,
        "pixel_size": sizes[0] if sizes and len(sizes) == 1 else None,
        "pixel_sizes": sizes,
        "n_optics_groups": stack.n_optics_groups,
        "n_stacks": len(stack.stack_refs),
        "stacks_found": len(stack.stack_refs) - len(stack.stacks_missing),
        "stacks_missing": stack.stacks_missing,
        "ctf_columns": [c for c in SUMMARY_CTF_COLUMNS if c in stack.table.columns],
        "columns": [str(c) for c in stack.table.columns],
        **_bad_summary(stack),
    }


def _bad_summary(stack) -> dict:
    """With --skip-bad: the bad particles (1-based rows, reasons); nothing otherwise."""
    bad = stack.skipped
    if bad is None:
        return {}
    return {"bad_particles": [{"row": int(r) + 1, "image": name, "reason": bad.reason(i)}
                              for i, (r, name) in enumerate(zip(bad.rows, bad.image_names, strict=True))],
            "bad_summary": bad.summary() if len(bad) else "none"}


def summary_lines(s: dict) -> list[str]:
    """The text ``cryovae info`` prints for a :func:`summarize` dict."""
    psize = "unknown (pass --apix)" if s["pixel_sizes"] is None else ", ".join(f"{v:.5g}" for v in s["pixel_sizes"]) + " Å/px"
    box = "unknown (no stack found)" if s["box"] is None else f"{s['box']} px"
    kind = s["source_kind"] + (f" (RELION {s['relion_version']})" if s["relion_version"] else "")
    lines = [f"file          {s['path']}", f"format        {kind}", f"particles     {s['n_particles']}",
             f"box           {box}", f"pixel size    {psize}", f"optics groups {s['n_optics_groups']}",
             f"stacks        {s['stacks_found']} of {s['n_stacks']} found"]
    for ref in s["stacks_missing"][:5]:
        lines.append(f"  missing     {ref}")
    if len(s["stacks_missing"]) > 5:
        lines.append(f"  ... and {len(s['stacks_missing']) - 5} more missing (try --datadir)")
    lines.append(f"CTF columns   {', '.join(c.removeprefix('rln') for c in s['ctf_columns']) or 'none'}")
    if "bad_particles" in s:
        lines.append(f"bad particles {s['bad_summary']}" if s["bad_particles"] else "bad particles none")
    return lines
