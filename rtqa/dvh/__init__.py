"""Geometry (slab stacks, derived structures), dose-grid maths, the DVH engine, TG-263 metrics
and the comparison with DVHs a planning system stored. Pure: no file access."""
