"""The report model (findings, plan reports, a check's result) and its renderers: text, JSON,
CSV and HTML. Renderers only render."""
