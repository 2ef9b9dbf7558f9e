"""``rtqa listen``: the DICOM node; ``rtqa pseudonym``: its keys and its map back to patients.

The node (:mod:`rtqa.node`, pynetdicom) is imported inside the commands, so that the rest of
the CLI never needs the ``node`` extra.
"""

from __future__ import annotations

import importlib.util
import logging
import signal
import sys
import threading
from typing import Any

import click

from rtqa.cli.app import EXIT_OK, EXIT_USAGE, FiniteFloatRange, _load_protocol, _run, cli, max_memory_option
from rtqa.cli.ledger import check_ledger_options, key_file_option
from rtqa.errors import RtqaError


@cli.command()
@click.option("--port", type=click.IntRange(0, 65535), required=True, help="TCP port (0: any free port, logged).")
@click.option("--ae-title", required=True, metavar="T", help="The node's AE title (senders must call it).")
@click.option(
    "--spool",
    required=True,
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Where received files are kept (institution/patient/study); created if missing.",
)
@click.option(
    "--ledger", "ledger_url", envvar="RTQA_LEDGER", metavar="URL", help="Record the checked plans in this ledger."
)
@click.option(
    "--output",
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Write each check's reports here (institution/patient/TIME.json and .txt).",
)
@click.option(
    "--allow",
    "allow",
    multiple=True,
    metavar="AE[@ADDRESS]=INSTITUTION",
    help="A sender allowed to send, and its institution (repeatable). ADDRESS: an IP address or network.",
)
@click.option(
    "--allow-file",
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE",
    help="Allowed senders, one AE[@ADDRESS]=INSTITUTION a line (# comments).",
)
@click.option("--bind", default="0.0.0.0", show_default=True, metavar="ADDRESS", help="The address to listen on.")
@click.option(
    "--protocol",
    "protocol_name",
    metavar="FILE|NAME",
    help="Protocol file or shipped name (default: the NCT03535259 protocol).",
)
@click.option(
    "--clinical",
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE.csv",
    help="Clinical facts per patient ID as stored (the pseudonym with --pseudonymise).",
)
@click.option(
    "--settle",
    type=FiniteFloatRange("a number of seconds >= 0", min=0),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="Check a patient's files once nothing has arrived for them for this long.",
)
@click.option(
    "--incomplete-after",
    type=FiniteFloatRange("a number of seconds >= 0", min=0),
    default=3600.0,
    show_default=True,
    metavar="SECONDS",
    help="Record a plan still incomplete (no structure set or dose) this long after its last file as not evaluable.",
)
@click.option(
    "--pseudonymise",
    "pseudonym_key_file",
    type=click.Path(exists=True, dir_okay=False),
    metavar="KEYFILE",
    help="Replace PatientID and PatientName by a keyed pseudonym (HMAC) before anything is stored.",
)
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), metavar="PEM", help="TLS: the certificate.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), metavar="PEM", help="TLS: its private key.")
@click.option(
    "--tls-ca",
    type=click.Path(exists=True, dir_okay=False),
    metavar="PEM",
    help="TLS: require senders' certificates signed by this CA.",
)
@click.option(
    "--timeout",
    type=FiniteFloatRange("a number of seconds >= 1", min=1),
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="Cut off a silent sender after this long (its files are set aside, not checked).",
)
@key_file_option
@max_memory_option
@click.option("--debug", is_flag=True, help="Show tracebacks of internal errors.")
def listen(
    port: int,
    ae_title: str,
    spool: str,
    ledger_url: str | None,
    output: str | None,
    allow: tuple[str, ...],
    allow_file: str | None,
    bind: str,
    protocol_name: str | None,
    clinical: str | None,
    settle: float,
    incomplete_after: float,
    pseudonym_key_file: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    tls_ca: str | None,
    timeout: float,
    key_file: str | None,
    debug: bool,
) -> None:
    """Receive plans over DICOM (a Storage SCP), check them as `rtqa check` does, and record them.

    Stops on SIGTERM or Ctrl-C, after the associations and the check under way.
    """
    if importlib.util.find_spec("pynetdicom") is None:
        raise click.UsageError("rtqa listen needs pynetdicom: pip install 'rtqa[node]'")
    from rtqa.node.allow import AllowListError, build_allow_list, parse_allow_entry, read_allow_file
    from rtqa.node.checker import CheckSettings
    from rtqa.node.pseudonym import read_key
    from rtqa.node.server import Node, NodeConfig, TlsFiles
    from rtqa.protocol.clinical import read_clinical_table

    if len(ae_title.strip()) not in range(1, 17):
        raise click.BadParameter("an AE title is 1 to 16 characters", param_hint="--ae-title")
    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("TLS needs both --tls-cert and --tls-key")
    if tls_ca and not tls_cert:
        raise click.UsageError("--tls-ca needs --tls-cert and --tls-key")
    try:
        entries = [parse_allow_entry(a) for a in allow] + (read_allow_file(allow_file) if allow_file else [])
        allow_list = build_allow_list(entries)
        key = read_key(pseudonym_key_file) if pseudonym_key_file else None
        table = read_clinical_table(clinical) if clinical else None
    except (AllowListError, RtqaError) as exc:
        raise click.UsageError(str(exc)) from None
    ledger_key = None
    if ledger_url:
        check_ledger_options(ledger_url, key_file)
        from rtqa.ledger.chain import key_from_environment

        ledger_key = key_from_environment(key_file)
    protocol = _load_protocol(protocol_name)
    config = NodeConfig(
        ae_title=ae_title.strip(),
        port=port,
        spool=spool,
        allow=allow_list,
        check=CheckSettings(protocol, settle, incomplete_after, clinical=table.facts if table else None, output=output),
        bind=bind,
        ledger_url=ledger_url,
        ledger_key=ledger_key,
        pseudonym_key=key,
        tls=TlsFiles(tls_cert, tls_key, tls_ca) if tls_cert and tls_key else None,
        network_timeout_s=timeout,
    )
    _configure_logging()

    def serve() -> int:
        node = Node(config)
        try:
            node.start()
        except OSError as exc:
            node.stop()
            raise click.UsageError(f"cannot listen on {bind}:{port}: {exc.strerror or exc}") from None
        stop = threading.Event()

        def on_signal(signum: int, _frame: Any) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        try:
            while not stop.wait(0.5):
                pass
        finally:
            node.stop()
        return EXIT_OK

    _run(serve, debug)


def _configure_logging() -> None:
    """One line per event on stderr (journald adds its own time stamp, a terminal does not)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s rtqa listen: %(message)s", "%Y-%m-%dT%H:%M:%S%z"))
    log = logging.getLogger("rtqa.node")
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    # pynetdicom's own messages duplicate ours; its errors still show
    logging.getLogger("pynetdicom").setLevel(logging.ERROR)


@cli.group()
def pseudonym() -> None:
    """Pseudonym keys, and the node's map from pseudonyms back to patients."""


@pseudonym.command("keygen")
@click.argument("key_file", type=click.Path(dir_okay=False))
def keygen(key_file: str) -> None:
    """Write a new random key to KEY_FILE (readable by its owner only; never overwritten).

    Nodes that share the key give a patient the same pseudonym."""
    from rtqa.node.pseudonym import PseudonymKeyError, write_new_key

    try:
        write_new_key(key_file)
    except PseudonymKeyError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"rtqa: new pseudonym key in {key_file}; keep it secret and keep a copy", err=True)


@pseudonym.command("lookup")
@click.argument("value", metavar="PSEUDONYM|PATIENT_ID")
@click.option(
    "--spool",
    type=click.Path(exists=True, file_okay=False),
    metavar="DIR",
    help="The node's spool: show the patient behind PSEUDONYM.",
)
@click.option(
    "--key",
    "key_file",
    type=click.Path(exists=True, dir_okay=False),
    metavar="KEYFILE",
    help="The key: show the pseudonym of PATIENT_ID.",
)
def lookup(value: str, spool: str | None, key_file: str | None) -> None:
    """The patient behind a pseudonym (with --spool), or the pseudonym of a patient ID (with --key).

    The map back to patients stays on the node that received the files; this command is the
    one way it leaves, on purpose."""
    if bool(spool) == bool(key_file):
        raise click.UsageError("give --spool DIR (pseudonym to patient) or --key KEYFILE (patient ID to pseudonym)")
    if key_file:
        from rtqa.node.pseudonym import PseudonymKeyError, pseudonym_of, read_key

        try:
            click.echo(pseudonym_of(read_key(key_file), value))
        except PseudonymKeyError as exc:
            raise click.UsageError(str(exc)) from None
        return
    import os

    from rtqa.node.state import NodeState, state_path

    assert spool is not None
    path = state_path(spool)
    if not os.path.exists(path):
        raise click.UsageError(f"{spool} is not a node's spool (no {path})")
    state = NodeState(path)
    try:
        found = state.lookup(value)
    finally:
        state.close()
    if not found:
        click.echo(f"rtqa: {value} is not a pseudonym this node has given", err=True)
        sys.exit(EXIT_USAGE)
    for r in found:
        click.echo(f"{r.pseudonym}\t{r.patient_id}\t{r.patient_name}\tfirst seen {r.first_seen}")
