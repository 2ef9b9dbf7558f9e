"""Small protocols for the end-cap tests: the head every one of them shares (an id, the chosen
end-cap convention, a fractionation that any phantom plan meets), and a writer."""

from __future__ import annotations

import textwrap
from pathlib import Path

HEAD = """\
protocol: {{id: {protocol_id}, version: "1"}}
dvh: {{end_cap: {end_cap}}}
fractionation:
  dose_per_fraction: {{value: 2.0, tolerance_pct: 100, source: "test"}}
  total_dose: {{range: [1, 100], variation_pct: 5, source: "test"}}
"""

# the phantom sphere of fixtures/phantoms.py as the protocol's PTV
SPHERE_PTV = """\
structures:
  PTV: {role: target, aliases: [sphere20]}
"""


def write_protocol(folder: Path, name: str, end_cap: str, body: str, *, protocol_id: str = "CAPS") -> str:
    """Write ``HEAD`` and ``body`` (YAML, dedented) to ``folder/name_end_cap.yaml``; its path."""
    path = folder / f"{name}_{end_cap}.yaml"
    path.write_text(HEAD.format(protocol_id=protocol_id, end_cap=end_cap) + textwrap.dedent(body), encoding="utf-8")
    return str(path)
