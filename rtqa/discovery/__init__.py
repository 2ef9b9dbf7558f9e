"""Finding files in any folder layout, grouping them into plan sets, choosing each plan's dose,
loading a plan set from disk, and running the check over many plan sets."""
