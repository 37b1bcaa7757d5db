"""Hosts of a multi-host job as Linux namespaces on this machine, shaped like SageMaker's.

Each host is a network namespace (its own interfaces, loopback and ports) whose processes also
get their own UTS namespace (hostname) and mount namespace (their own /etc/hosts):

- the hosts are joined by a veth pair on the job's interface, named `cnk0` (not eth0), with
  addresses of a 10.213.x.0/24 subnet of our own; a lone host gets a veth pair of its own;
- the hostname is `aws` on every host, as inside SageMaker (aws/deep-learning-containers,
  scripts/docker/pytorch/changehostname.c), and it resolves to nothing;
- `algo-N` names resolve through the host's own /etc/hosts (SageMaker uses DNS), with
  `hosts: files` only and an empty resolv.conf, so no lookup leaves the namespace.

No traffic leaves loopback or these namespaces. Everything is removed on exit, and
namespaces left by a killed earlier run (their creator's pid gone) are removed on entry.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

INTERFACE = "cnk0"
HOSTNAME = "aws"
PREFIX = "cnk-"

# Inside the host's namespaces: set the hostname, put the host's name service files in place
# (bind mounts, private to this mount namespace), then run the command.
_ENTER = (
    'hostname "$1" && mount --bind "$2" /etc/hosts && mount --bind "$3" /etc/nsswitch.conf '
    '&& mount --bind "$4" /etc/resolv.conf && shift 4 && exec "$@"'
)


@dataclass(frozen=True)
class Host:
    """One host: its job name, its network namespace and address, its name service files."""

    name: str
    netns: str
    address: str
    etc: Path

    def command(self, argv: Sequence[str]) -> list[str]:
        """`argv` run on this host (network, UTS and mount namespaces, its /etc files)."""
        files = [str(self.etc / name) for name in ("hosts", "nsswitch.conf", "resolv.conf")]
        return [
            "ip", "netns", "exec", self.netns,
            "unshare", "--uts", "--mount", "--propagation", "private",
            "sh", "-c", _ENTER, "sh", HOSTNAME, *files, *argv,
        ]  # fmt: skip


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")


def unavailable() -> str | None:
    """Why namespaces cannot be used here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root)"
    for tool in ("ip", "unshare", "mount", "hostname"):
        if shutil.which(tool) is None:
            return f"{tool!r} is not installed"
    # What cluster() and Host.command() do, on a pair of throw-away namespaces.
    names = [f"{PREFIX}{os.getpid()}-probe{i}" for i in (1, 2)]
    enter = "hostname aws && mount --bind /etc/hosts /etc/hosts"
    try:
        for name in names:
            _run("ip", "netns", "add", name)
        _run(
            "ip", "link", "add", "name", INTERFACE, "netns", names[0], "type", "veth",
            "peer", "name", INTERFACE, "netns", names[1],
        )  # fmt: skip
        _run("ip", "netns", "exec", names[0], "unshare", "--uts", "--mount", "sh", "-c", enter)
    except (OSError, subprocess.SubprocessError, RuntimeError) as error:
        return f"namespaces refused on this machine: {error}"
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    return None


def _remove_stale() -> None:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    for line in listing.stdout.splitlines():
        match = re.match(rf"({PREFIX}(\d+)-\S+)", line)
        if match and not Path(f"/proc/{match.group(2)}").exists():
            subprocess.run(["ip", "netns", "del", match.group(1)], capture_output=True, check=False)


@contextmanager
def cluster(
    names: Sequence[str], folder: Path, *, unresolvable: Sequence[str] = ()
) -> Iterator[list[Host]]:
    """One or two hosts (namespaces created, joined, torn down on exit).

    Args:
        names: the hosts' job names (algo-1, algo-2).
        folder: where each host's /etc files are written.
        unresolvable: names left out of every host's /etc/hosts (a host whose DNS record
            never appears).
    """
    if not 1 <= len(names) <= 2:
        raise ValueError("one or two hosts")
    _remove_stale()
    tag = f"{PREFIX}{os.getpid()}-{random.randrange(16**6):06x}"
    subnet = f"10.213.{random.randrange(1, 255)}"
    hosts = [
        Host(name, f"{tag}-{i}", f"{subnet}.{i}", folder / name)
        for i, name in enumerate(names, start=1)
    ]
    known = [host for host in hosts if host.name not in unresolvable]
    nsswitch = _nsswitch()
    created: list[str] = []
    try:
        for host in hosts:
            _run("ip", "netns", "add", host.netns)
            created.append(host.netns)
        if len(hosts) == 2:
            first, second = hosts
            _run(
                "ip", "link", "add", "name", INTERFACE, "netns", first.netns, "type", "veth",
                "peer", "name", INTERFACE, "netns", second.netns,
            )  # fmt: skip
        else:
            # A veth pair inside the namespace (gVisor has no dummy links): cnk0 is up.
            ns = hosts[0].netns
            _run("ip", "-n", ns, "link", "add", INTERFACE, "type", "veth", "peer", "name", "cnk1")
            _run("ip", "-n", ns, "link", "set", "cnk1", "up")
        for host in hosts:
            _run("ip", "-n", host.netns, "addr", "add", f"{host.address}/24", "dev", INTERFACE)
            _run("ip", "-n", host.netns, "link", "set", INTERFACE, "up")
            _run("ip", "-n", host.netns, "link", "set", "lo", "up")
            host.etc.mkdir(parents=True, exist_ok=True)
            lines = ["127.0.0.1 localhost"] + [f"{h.address} {h.name}" for h in known]
            (host.etc / "hosts").write_text("\n".join(lines) + "\n")
            (host.etc / "nsswitch.conf").write_text(nsswitch)
            (host.etc / "resolv.conf").write_text("")
        yield hosts
    finally:
        for netns in created:
            subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)


def _nsswitch() -> str:
    """This machine's nsswitch.conf with host names looked up in /etc/hosts only."""
    path = Path("/etc/nsswitch.conf")
    lines = path.read_text().splitlines() if path.is_file() else []
    kept = [line for line in lines if not line.strip().startswith("hosts:")]
    return "\n".join([*kept, "hosts: files"]) + "\n"
