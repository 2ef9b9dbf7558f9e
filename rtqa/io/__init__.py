"""The reading layer: the only part of rtqa that imports pydicom.

Each ``read_*`` function takes a path and returns a domain object of :mod:`rtqa.model`, or
raises an :class:`~rtqa.errors.InputError` naming the file, the attribute and what was
expected. Input files are opened read-only and never written to.
"""

from rtqa.io.deferred import install as _defer_pixel_decoders

_defer_pixel_decoders()  # before the first import of pydicom: its pixel decoders load on first use

from rtqa.io.dose import read_dose, read_dose_info, read_stored_dvhs  # noqa: E402
from rtqa.io.header import read_header  # noqa: E402
from rtqa.io.plan import read_plan  # noqa: E402
from rtqa.io.structures import read_structure_set  # noqa: E402

__all__ = ["read_dose", "read_dose_info", "read_header", "read_plan", "read_stored_dvhs", "read_structure_set"]
