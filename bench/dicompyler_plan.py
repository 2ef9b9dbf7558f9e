"""dicompyler-core 0.5.6 computing the DVH of every ROI of a plan, as one process.

    REF_PYTHON bench/dicompyler_plan.py RS.dcm RD.dcm

Run by bench/bench_cli.py in the reference interpreter (pydicom < 3, see dicompyler_env.py)
and timed from outside, start-up included, like ``rtqa check``. Default settings (no
interpolation); derived structures are not computed (dicompyler-core has none). Kept free of
rtqa imports: it runs in another environment.
"""

from __future__ import annotations

import sys
import warnings

from dicompylercore import dicomparser, dvhcalc

warnings.simplefilter("ignore")


def main() -> int:
    rs, rd = sys.argv[1], sys.argv[2]
    structures = dicomparser.DicomParser(rs).GetStructures()
    for number in structures:
        dvh = dvhcalc.get_dvh(rs, rd, number)
        print(f"{structures[number]['name']}\t{float(dvh.volume):.3f} cc\tmean {float(dvh.mean):.3f} Gy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
