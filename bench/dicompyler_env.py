"""Create the reference environment for dicompyler-core (it needs pydicom < 3).

    python bench/dicompyler_env.py [FOLDER]     # default .tox/dicompyler-ref

Prints the path of its Python. Used by ``tox -e crosscheck`` and by bench/bench_dvh.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

REQUIREMENTS = ["dicompyler-core==0.5.6", "pydicom>=2.4,<3", "numpy", "scipy", "matplotlib", "scikit-image", "shapely"]


def main() -> int:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else ".tox/dicompyler-ref")
    python = folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    if not python.exists():
        venv.create(folder, with_pip=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *REQUIREMENTS], check=True)
    print(python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
