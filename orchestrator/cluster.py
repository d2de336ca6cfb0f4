"""Connecting to an existing Ray cluster: addresses, token authentication, fast failures.

Two addresses name a cluster. ``graftune run --address`` (``resources.address``)
connects a driver here to the cluster's GCS, ``HEAD:6379``, as ``ray.init``
does; ``graftune submit`` and ``graftune jobs`` talk to its dashboard,
``http://HEAD:8265``, through Ray's job API (see :mod:`orchestrator.submit`).

Token authentication: when ``RAY_AUTH_MODE`` is not set and a token is at hand
(``RAY_AUTH_TOKEN``, the file named by ``RAY_AUTH_TOKEN_PATH``, or
``~/.ray/auth_token``), graftune sends it to a cluster that asks for one (one
that refuses a first question without it); a cluster started without token
authentication is not sent it, as a driver in token mode refuses that
cluster's calls. An explicit ``RAY_AUTH_MODE`` is always respected, and
graftune never turns authentication off.

Ray waits a long time for an address that does not answer (over a minute) and
reports a refused token as a generic connection error after 20 seconds; the
checks here fail within seconds instead, with the address and the likely fix.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import BadAddress, ClusterError, ClusterUnreachable

#: Seconds to wait for a TCP connection to the cluster.
CONNECT_TIMEOUT_S = 5.0
#: Seconds to wait for the GCS to answer once connected.
ANSWER_TIMEOUT_S = 10.0
_AUTH_MODE = "RAY_AUTH_MODE"
#: What :func:`probe` found, by the address it was given (a run probes, then connects).
_PROBED: dict[str, ClusterInfo] = {}


def token_source() -> str | None:
    """Where Ray would read the authentication token from here, or ``None`` if nowhere."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return "RAY_AUTH_TOKEN"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH", "").strip()
    if path:
        return f"RAY_AUTH_TOKEN_PATH ({path})"
    default = Path.home() / ".ray" / "auth_token"
    if default.is_file() and default.stat().st_size > 0:
        return str(default)
    return None


def check_token_path() -> None:
    """Refuse a ``RAY_AUTH_TOKEN_PATH`` naming no token, before Ray reads it.

    Ray aborts the process that reads such a file with a C++ stack dump, whose
    last line was taken for a GCS that answered oddly (found by QA).

    Raises:
        ClusterError: The file is missing, unreadable or empty.
    """
    path = os.environ.get("RAY_AUTH_TOKEN_PATH", "").strip()
    if not path or os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return
    try:
        empty = not Path(path).expanduser().read_bytes().strip()
    except OSError as exc:
        problem = exc.strerror or str(exc)
    else:
        problem = "the file is empty" if empty else None
    if problem is not None:
        raise ClusterError(
            f"RAY_AUTH_TOKEN_PATH names {path}, which holds no token ({problem}): put the "
            "cluster's token there (`ray get-auth-token` on the head node prints it), or "
            "unset it"
        )


def use_token_if_available() -> None:
    """Send the token with every request when one is at hand and ``RAY_AUTH_MODE`` is unset.

    Must run before the first Ray call of the process that reads the mode.
    """
    if os.environ.get(_AUTH_MODE) is not None or token_source() is None:
        return
    os.environ[_AUTH_MODE] = "token"
    with contextlib.suppress(Exception):
        # Ray caches its configuration at import; refresh it so this process sees the mode.
        from ray._raylet import Config

        Config.initialize("")


def token_fix() -> str:
    """How to give graftune the cluster's token, naming where it looked."""
    source = token_source()
    mode = os.environ.get(_AUTH_MODE)
    lines = []
    if mode is not None and mode.lower() != "token":
        lines.append(f"RAY_AUTH_MODE is {mode!r} here, so no token was sent: unset it")
    elif source is None:
        lines.append(
            "no token was found here: set RAY_AUTH_TOKEN to the cluster's token, or put it "
            "in ~/.ray/auth_token (or in a file named by RAY_AUTH_TOKEN_PATH)"
        )
    else:
        lines.append(
            f"the token from {source} is not the cluster's: replace it with the cluster's token"
        )
    lines.append("`ray get-auth-token` on the head node prints the cluster's token")
    return "; ".join(lines)


@dataclass(frozen=True)
class ClusterInfo:
    """What a quick look at a cluster's GCS found."""

    address: str
    #: The host name of each live node.
    hosts: tuple[str, ...]

    @property
    def nodes(self) -> int:
        """How many live nodes the cluster has."""
        return len(self.hosts)

    @property
    def elsewhere(self) -> list[str]:
        """The hosts of live nodes that are not this machine."""
        here = socket.gethostname()
        return sorted({host for host in self.hosts if host != here})


def check_address_form(address: str) -> None:
    """Refuse an address that cannot be a cluster's GCS by its form alone (a
    dashboard's ``http://``, a Ray Client's ``ray://``, no ``HOST:PORT``);
    ``auto`` and ``local`` pass. Asks nothing of any cluster, so ``validate``
    says what a run would (found by QA: validate said ok, and run refused it).

    Raises:
        BadAddress: What is wrong and the address to give instead.
    """
    text = address.strip()
    if text in ("auto", "local"):
        return
    _refuse_other_kinds(text)
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise BadAddress(
            f"{address!r} is not a cluster address: expected HOST:PORT, like 10.0.0.5:6379"
        )
    if not 0 < int(port) < 65536:  # found by QA: 99999 passed validate
        raise BadAddress(
            f"{address!r}: port {port} is not a TCP port (1 to 65535); a cluster's GCS "
            "listens on 6379 unless `ray start --head --port` said otherwise"
        )


def _refuse_other_kinds(text: str) -> None:
    """Refuse a dashboard's (``http://``) or a Ray Client's (``ray://``) address."""
    if text.startswith(("http://", "https://")):
        from urllib.parse import urlsplit

        try:
            port = urlsplit(text).port
        except ValueError:
            port = None
        if port == 6379:  # the GCS's own port (found by QA: it was sent to submit)
            bare = text.split("://", 1)[1].rstrip("/")
            raise BadAddress(
                f"{text}: a driver connects to the cluster's GCS address without http://, "
                f"HEAD:6379 (what `ray start --head` prints); did you mean --address {bare}?"
            )
        raise BadAddress(
            f"{text} is a dashboard address; a driver connects to the cluster's GCS address, "
            "HEAD:6379 (what `ray start --head` prints). To send the run to the cluster as "
            f"a job, use `graftune submit RECIPE --address {text}`"
        )
    if text.startswith("ray://"):
        raise BadAddress(
            f"{text} is a Ray Client address, which graftune does not use: give the GCS "
            "address HEAD:6379 to run --address, or submit through the dashboard "
            "(graftune submit RECIPE --address http://HEAD:8265)"
        )


def gcs_address(address: str) -> str:
    """The ``HOST:PORT`` of the GCS that ``address`` names (``auto``: this machine's).

    Raises:
        ClusterError: ``address`` is a dashboard or Ray Client address, or
            ``auto`` finds no cluster.
    """
    text = address.strip()
    _refuse_other_kinds(text)
    if text == "auto":
        from ray._private.services import canonicalize_bootstrap_address

        try:
            found = canonicalize_bootstrap_address("auto")
        except ConnectionError:  # Ray 2.60's "Could not find any running Ray instance"
            found = None  # found by QA: an internal error, exit 1, not the message below
        if not found:
            raise ClusterError(
                "address auto: no running Ray cluster was found on this machine "
                "(start one with `ray start --head`, or give its address)"
            )
        return str(found)
    return text


def probe(address: str) -> ClusterInfo:
    """Check within seconds that ``address`` is a Ray cluster that accepts us.

    Returns:
        The GCS address and the host of each live node.

    Raises:
        ClusterError: Nothing answers, something else answers, or the cluster
            refuses the token; the message names the address and the fix.
    """
    check_token_path()
    gcs = gcs_address(address)
    host, _, port = gcs.rpartition(":")
    if not host or not port.isdigit():
        raise BadAddress(
            f"{address!r} is not a cluster address: expected HOST:PORT, like 10.0.0.5:6379"
        )
    try:
        with socket.create_connection(
            (host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S
        ) as conn:
            protocol = speaks(conn)
    except OSError as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        found = (
            " (what address auto found: the cluster last started on this machine, which may "
            "be gone; --address local runs on embedded Ray here instead)"
            if address.strip() == "auto"
            else ""
        )
        raise ClusterUnreachable(
            f"cannot reach the Ray cluster at {gcs}{found}: {reason}. Is it running (`ray "
            "status` on the head node)? The address is the GCS address `ray start --head` "
            "prints (port 6379 by default); from outside the cluster's network, forward it "
            "(ssh -L 6379:localhost:6379 HEAD)"
        ) from None
    if protocol == "http":
        # Else the GCS check below waits its whole timeout on a web server.
        raise ClusterError(
            f"{gcs} is a web server, as a Ray dashboard (port 8265 by default) is, not the "
            "cluster's GCS: give the GCS address that `ray start --head` prints (HEAD:6379 by "
            f"default), or send the run to the cluster as a job: graftune submit RECIPE "
            f"--address http://{gcs}"
        )
    hosts = None
    if os.environ.get(_AUTH_MODE) is None and token_source() is not None:
        # A token is at hand (embedded Ray leaves one in ~/.ray/auth_token), but a
        # cluster started without token authentication must not be sent it: a driver
        # in token mode refuses the cluster's own calls ("Missing authorization
        # header"), and every trial was cancelled before it ran (found by QA). Asked
        # without the token, a cluster that wants one refuses: only then is it sent.
        hosts = _node_hosts(gcs, token=False)
    if hosts is None:
        use_token_if_available()
        hosts = _node_hosts(gcs)
    info = ClusterInfo(address=gcs, hosts=hosts)
    _PROBED[address] = info
    return info


#: What an HTTP/2 client sends first. A gRPC server (Ray's GCS) answers it with a
#: SETTINGS frame and an HTTP/1 server (the dashboard) with a status line, both at
#: once, so one exchange tells them apart without a word of HTTP/1 in the GCS's log.
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: An HTTP/2 frame header is 9 bytes; its fourth is the frame's type, 4 for SETTINGS.
_SETTINGS_FRAME = 4


def speaks(conn: socket.socket, timeout: float = 2.0) -> str | None:
    """``"grpc"`` or ``"http"``: what answers on the connected socket ``conn``; ``None``: unknown.

    Tells a GCS address given where a dashboard's is expected, and the other way
    round, within milliseconds instead of after a client's timeout.
    """
    conn.settimeout(timeout)
    try:
        conn.sendall(_HTTP2_PREFACE)
        answer = conn.recv(16)
    except OSError:
        return None
    if answer.startswith(b"HTTP/"):
        return "http"
    if len(answer) >= 4 and answer[3] == _SETTINGS_FRAME:
        return "grpc"
    return None


def speaks_at(host: str, port: int) -> str | None:
    """:func:`speaks` of a new connection to ``host:port``; ``None`` also when none is made."""
    try:
        with socket.create_connection((host.strip("[]"), port), timeout=CONNECT_TIMEOUT_S) as conn:
            return speaks(conn)
    except OSError:
        return None


#: Run in a child process: Ray's GCS client retries for over a minute when a port is
#: not a GCS and prints C++ warnings on the way; a child is bounded and quiet.
_PROBE = """
import json, sys
from ray._raylet import GcsClient
from ray.exceptions import AuthenticationError
try:
    client = GcsClient(address=sys.argv[1])
    nodes = client.get_all_node_info(timeout=int(float(sys.argv[2])))
    alive = [n.node_manager_hostname for n in nodes.values() if n.state == type(n).ALIVE]
    print(json.dumps({"hosts": alive}))
except AuthenticationError as exc:
    print(json.dumps({"auth": str(exc)}))
except Exception as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
"""


def _node_hosts(gcs: str, *, token: bool = True) -> tuple[str, ...] | None:
    """The hosts of the cluster's live nodes, asked in a child process.

    ``token=False`` asks without a token (``RAY_AUTH_MODE=disabled`` in the
    child), and returns ``None`` where the cluster refuses that, as a cluster
    with token authentication does.
    """
    env = None if token else {**os.environ, _AUTH_MODE: "disabled"}
    try:
        child = subprocess.run(
            [sys.executable, "-c", _PROBE, gcs, str(ANSWER_TIMEOUT_S)],
            env=env,
            capture_output=True,
            text=True,
            timeout=ANSWER_TIMEOUT_S + 5,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ClusterError(
            f"the Ray cluster at {gcs} did not answer within {ANSWER_TIMEOUT_S:.0f} s; "
            "is that the GCS port (6379 by default), and is the head node healthy?"
        ) from None
    lines = child.stdout.strip().splitlines()
    try:
        outcome = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        outcome = {}
    if "hosts" in outcome:
        return tuple(str(host) for host in outcome["hosts"])
    if "auth" in outcome:
        if not token:
            return None
        raise ClusterError(f"the Ray cluster at {gcs} refused the connection: {token_fix()}")
    reason = outcome.get("error") or (child.stderr.strip().splitlines() or ["no answer"])[-1]
    raise ClusterError(
        f"{gcs} answered, but not as a Ray cluster's GCS ({reason}); give the GCS address "
        "that `ray start --head` prints (port 6379 by default), not the dashboard's"
    )


def connect(address: str, **init_kwargs: Any) -> ClusterInfo:
    """Check ``address`` quickly, then ``ray.init`` a driver connected to it.

    Raises:
        ClusterError: As :func:`probe`, or when ``ray.init`` still fails.
    """
    import ray

    info = _PROBED.pop(address, None) or probe(address)
    try:
        ray.init(address=info.address, **init_kwargs)
    except (ConnectionError, RuntimeError) as exc:
        raise ClusterError(f"cannot connect to the Ray cluster at {info.address}: {exc}") from exc
    return info


def trial_does_not_fit(
    cpus: float, gpus: float, nodes: list[dict[str, float]] | None = None
) -> tuple[str, str] | None:
    """Why no node of the Ray this process is connected to can run one trial, or ``None``.

    Tune would keep such a trial pending for ever, saying so only in Ray's log.
    ``nodes`` (each node's resources, like ``{"CPU": 2, "GPU": 0}``) stands in
    for asking Ray.

    Returns:
        The ``resources`` key at fault (``gpus_per_trial`` or ``cpus_per_trial``)
        and what is missing.
    """
    if nodes is None:
        import ray

        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if any(n.get("CPU", 0) >= cpus and n.get("GPU", 0) >= gpus for n in nodes):
        return None
    most_gpus = max((n.get("GPU", 0) for n in nodes), default=0)
    if gpus and most_gpus < gpus:
        has = f"at most {most_gpus:g} on a node" if most_gpus else "none"
        return "gpus_per_trial", f"a trial asks for {_count(gpus, 'GPU')}, and Ray has {has}"
    most_cpus = max((n.get("CPU", 0) for n in nodes), default=0)
    asks = f"a trial asks for {_count(cpus, 'CPU')}"
    if most_cpus < cpus:
        what = f"{asks}, and Ray has at most {most_cpus:g} on a node"
    else:
        what = f"{asks} and {_count(gpus, 'GPU')} on one node, and no node has both"
    return "cpus_per_trial", what


def _count(number: float, thing: str) -> str:
    return f"{number:g} {thing}" + ("" if number == 1 else "s")


def node_label() -> str | None:
    """``IP/NODEID8`` of the Ray node this process runs on, or ``None`` outside Ray.

    The IP alone cannot tell apart two nodes on one machine; eight hex digits
    of the node id can.
    """
    try:
        import ray

        if not ray.is_initialized():
            return None
        node_id = ray.get_runtime_context().get_node_id()
        return f"{ray.util.get_node_ip_address()}/{node_id[:8]}"
    except Exception:
        return None


__all__ = [
    "ClusterError",
    "ClusterInfo",
    "connect",
    "gcs_address",
    "node_label",
    "probe",
    "token_fix",
    "token_source",
    "use_token_if_available",
]
