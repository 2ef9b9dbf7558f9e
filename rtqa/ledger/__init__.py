"""The audit ledger of a trial QA office: submissions, reviewer decisions, versions and statistics.

Optional: nothing outside :mod:`rtqa.cli.ledger` imports this package, and the CLI imports it
only when a ledger is used, so that ``rtqa check`` without ``--ledger`` never loads SQLAlchemy.

Modules
-------
errors      LedgerError (exit 2 in the CLI)
schema      the tables (SQLAlchemy Core) of the current schema revision
db          opening a ledger by URL, the schema revision check, migrations (Alembic)
chain       the hash chain over submissions and decisions, its HMACs under the ledger key
anchors     heads of the chain kept outside the database (anchor files)
record      writing a check result as submissions (idempotent, versioned)
review      reviewer decisions and the reviewed view of a submission
history     the versions of one patient's case
diff        the differences between two submissions
stats       the office's statistics
verify      checking the chain, the HMACs, kept anchors and the finding rows; every problem listed
render      text, JSON and HTML of a submission read back from the ledger
"""
