"""How hosts find each other (waiting, interface variables) and which channels a job refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnn_kmeans.container import launch, network
from cnn_kmeans.container.environment import Layout, TrainingEnvironment
from cnn_kmeans.errors import UserError


class FakeClock:
    """time.monotonic and time.sleep of a clock that only moves when slept on."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def lookup_from(table: dict[str, str], ready_at: dict[str, float], clock: FakeClock):
    def lookup(host: str) -> str:
        if host not in table or clock.now < ready_at.get(host, 0.0):
            raise OSError(f"[Errno -2] {host}: Name or service not known")
        return table[host]

    return lookup


def test_hosts_are_waited_for_with_growing_delays_until_they_resolve():
    clock = FakeClock()
    table = {"algo-1": "10.0.0.1", "algo-2": "10.0.0.2"}
    lookup = lookup_from(table, {"algo-2": 5.0}, clock)
    addresses = network.wait_for_hosts(
        ["algo-1", "algo-2"], 60, lookup=lookup, clock=clock, sleep=clock.sleep
    )
    assert addresses == table
    assert clock.sleeps[:4] == [0.1, 0.2, 0.4, 0.8] and 5.0 <= clock.now < 10.0


def test_a_host_that_never_resolves_fails_by_name_once_the_wait_is_over():
    clock = FakeClock()
    lookup = lookup_from({"algo-1": "10.0.0.1"}, {}, clock)
    with pytest.raises(UserError, match=r"host 'algo-2' .* did not resolve .* within 900 s"):
        network.wait_for_hosts(
            ["algo-1", "algo-2"], 900, lookup=lookup, clock=clock, sleep=clock.sleep
        )
    assert 870 <= clock.now <= 900 and max(clock.sleeps) == network.MAX_DELAY


def test_wait_is_15_minutes_unless_configured():
    assert network.wait_seconds({}) == 900
    assert network.wait_seconds({network.WAIT_ENV: "2.5"}) == 2.5
    for bad in ("0", "-1", "soon", "inf"):
        with pytest.raises(UserError, match=network.WAIT_ENV):
            network.wait_seconds({network.WAIT_ENV: bad})


def test_gloo_and_nccl_are_bound_to_the_job_interface_unless_the_user_chose():
    common = {"current_host": "algo-2", "instance_type": "ml.m5.xlarge", "interfaces": ["lo"]}
    settings = network.communication_env({}, interface="lo", **common)
    assert settings == {
        "GLOO_SOCKET_IFNAME": "lo",
        "NCCL_SOCKET_IFNAME": "lo",
        "NCCL_HOSTID": "algo-2",
    }
    mine = {"NCCL_SOCKET_IFNAME": "ens5", "GLOO_SOCKET_IFNAME": "ens5"}
    assert network.communication_env(mine, interface="lo", **common) == {"NCCL_HOSTID": "algo-2"}
    # An interface this host does not have (local mode's default eth0) is not forced on gloo.
    assert network.communication_env({}, interface="eth0", **common) == {"NCCL_HOSTID": "algo-2"}


def test_efa_instance_types_get_the_toolkit_settings():
    def settings(instance_type: str) -> dict[str, str]:
        return network.communication_env(
            {"NCCL_PROTO": "LL128"},
            interface="eth0",
            current_host="algo-1",
            instance_type=instance_type,
            interfaces=["eth0"],
        )

    assert {"FI_PROVIDER", "FI_EFA_USE_DEVICE_RDMA"}.isdisjoint(settings("ml.g5.12xlarge"))
    assert settings("ml.g5.48xlarge")["FI_PROVIDER"] == "efa"
    assert "FI_EFA_USE_DEVICE_RDMA" not in settings("ml.g5.48xlarge")
    p4d = settings("ml.p4d.24xlarge")
    assert p4d["FI_EFA_USE_DEVICE_RDMA"] == "1" and p4d["RDMAV_FORK_SAFE"] == "1"
    assert "NCCL_PROTO" not in p4d  # the user's choice stays


def environment(hosts: list[str], mode: str = "File", distribution: str = "FullyReplicated"):
    """A job's environment as from_toolkit reads it from inputdataconfig/resourceconfig.json."""
    channel = {"TrainingInputMode": mode, "S3DistributionType": distribution}
    return TrainingEnvironment(
        layout=Layout(Path("/opt/ml")),
        hyperparameters={},
        channels={"training": Path("/opt/ml/input/data/training")},
        hosts=tuple(hosts),
        current_host=hosts[0],
        network_interface_name="ens5",
        instance_type="ml.m5.large",
        channel_configs={"training": channel},
    )


def test_the_launch_plan_carries_interface_and_instance_type_and_a_master_address():
    plan = launch.plan(environment(["algo-1", "algo-2"]))
    assert (plan.interface, plan.instance_type) == ("ens5", "ml.m5.large")
    assert (plan.current_host, plan.multi_host, plan.world_size) == ("algo-1", True, 2)
    command = plan.command("10.0.0.1")
    assert "--master-addr=10.0.0.1" in command and "--node-rank=0" in command


def test_file_and_fastfile_channels_are_read_and_a_pipe_mode_channel_is_refused():
    environment(["algo-1"], "File").check_channels()
    environment(["algo-1"], "FastFile").check_channels()
    with pytest.raises(UserError, match=r"channel 'training' uses input mode Pipe.*File or Fast"):
        environment(["algo-1"], "Pipe").check_channels()


def test_a_sharded_channel_is_refused_on_several_hosts_only():
    environment(["algo-1"], distribution="ShardedByS3Key").check_channels()  # one host: all data
    with pytest.raises(UserError, match=r"'training' is ShardedByS3Key on a job of 2 instances"):
        environment(["algo-1", "algo-2"], distribution="ShardedByS3Key").check_channels()
