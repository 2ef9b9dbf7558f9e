"""The exception hierarchy of rtqa.

Every error that a user can cause derives from :class:`RtqaError`. Messages name the file,
the DICOM attribute (keyword and tag) and what was expected, so that a physicist can act on
them without a traceback. A failed protocol rule is never an exception: it is a finding.
"""

from __future__ import annotations


class RtqaError(Exception):
    """Root of every error rtqa raises on purpose."""


class InputError(RtqaError):
    """A file could not be read or holds something rtqa cannot use.

    Parameters
    ----------
    path
        The file concerned (``None`` when not tied to one file).
    message
        What was found and what was expected.
    attribute
        The DICOM keyword (and tag) concerned, if any.
    """

    def __init__(self, path: str | None, message: str, *, attribute: str | None = None) -> None:
        self.path = path
        self.attribute = attribute
        where = f"{path}: " if path else ""
        what = f"{attribute}: " if attribute else ""
        super().__init__(f"{where}{what}{message}")


class UnsupportedObjectError(InputError):
    """A DICOM object of a kind rtqa refuses on purpose (RT Ion plans, for example)."""


class DoseGridError(InputError):
    """An RT Dose whose grid, encoding or units cannot be used."""


class GeometryError(RtqaError):
    """Contours or grids that do not describe a usable geometry."""


class MissingStructureError(GeometryError):
    """A structure that encloses no volume (no closed contours or under 0.01 cc)."""


class DoseSelectionError(RtqaError):
    """The dose of a plan cannot be chosen or combined (incomplete BEAM set, ambiguity)."""


class CourseDoseError(DoseSelectionError):
    """A course's composite dose cannot be formed: some of its plans have no dose of their own.

    ``plans`` names them (label or file); a question to the centre, not a grade."""

    def __init__(self, message: str, plans: tuple[str, ...]) -> None:
        super().__init__(message)
        self.plans = plans


class MetricSyntaxError(RtqaError):
    """A DVH metric that does not follow the TG-263 syntax."""


class ProtocolError(RtqaError):
    """A protocol file that is invalid."""
