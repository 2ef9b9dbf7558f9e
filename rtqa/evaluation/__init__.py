"""Grading a loaded plan against a protocol: prescriptions, per-case DVHs by protocol names, and
the checks of every rule kind. Pure: no file access, no printing."""
