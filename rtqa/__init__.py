"""rtqa: radiotherapy dose-plan QA and protocol-compliance checking for DICOM RT."""

# A constant, not importlib.metadata: reading the installed distribution's metadata costs
# tens of milliseconds at every start (issue 10). tests/test_packaging.py checks that it
# equals the version in pyproject.toml.
__version__ = "0.1.0"

__all__ = ["__version__"]
