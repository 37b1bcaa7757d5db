"""The torch thread count: available cores from affinity and cgroup quotas, and the settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cnn_kmeans.errors import UserError
from cnn_kmeans.threads import (
    available_cores,
    cgroup_cpu_quota,
    default_threads,
    threads_setting,
    torch_threads,
)


def fake_root(tmp_path: Path, cgroup: str, files: dict[str, str]) -> Path:
    """A file system root with /proc/self/cgroup and the given files under /sys/fs/cgroup."""
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text(cgroup)
    for name, text in files.items():
        path = tmp_path / "sys/fs/cgroup" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_v2_quota_max_means_no_limit(tmp_path):
    root = fake_root(tmp_path, "0::/job\n", {"job/cpu.max": "max 100000\n"})
    assert cgroup_cpu_quota(root) is None
    assert available_cores(root, affinity=8, cpu_count=16) == 8


def test_v2_quota_smaller_than_affinity_wins(tmp_path):
    root = fake_root(tmp_path, "0::/job\n", {"job/cpu.max": "200000 100000\n"})
    assert cgroup_cpu_quota(root) == 2.0
    assert available_cores(root, affinity=8, cpu_count=16) == 2


def test_v2_fractional_quota_rounds_down_but_never_to_zero(tmp_path):
    root = fake_root(tmp_path, "0::/job\n", {"job/cpu.max": "150000 100000\n"})
    assert available_cores(root, affinity=4, cpu_count=4) == 1
    half = fake_root(tmp_path / "half", "0::/\n", {"cpu.max": "50000 100000\n"})
    assert available_cores(half, affinity=4, cpu_count=4) == 1


def test_v2_the_smallest_quota_among_ancestors_counts(tmp_path):
    root = fake_root(
        tmp_path,
        "0::/outer/inner\n",
        {"outer/cpu.max": "300000 100000", "outer/inner/cpu.max": "max 100000"},
    )
    assert available_cores(root, affinity=8, cpu_count=8) == 3


def test_v2_container_view_reads_the_mount_root(tmp_path):
    # /proc/self/cgroup names the host's path; the container sees its own cgroup at the root.
    root = fake_root(tmp_path, "0::/kubepods/pod1/abc\n", {"cpu.max": "400000 100000"})
    assert available_cores(root, affinity=16, cpu_count=16) == 4


def test_v1_cfs_quota_and_period(tmp_path):
    root = fake_root(
        tmp_path,
        "4:memory:/x\n3:cpu,cpuacct:/docker/abc\n",
        {"cpu,cpuacct/cpu.cfs_quota_us": "250000", "cpu,cpuacct/cpu.cfs_period_us": "100000"},
    )
    assert cgroup_cpu_quota(root) == 2.5
    assert available_cores(root, affinity=8, cpu_count=8) == 2


def test_v1_no_quota(tmp_path):
    root = fake_root(
        tmp_path, "1:cpu:/\n", {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}
    )
    assert cgroup_cpu_quota(root) is None
    assert available_cores(root, affinity=2, cpu_count=2) == 2


def test_affinity_and_cpu_count_bound_it_without_cgroups(tmp_path):
    assert available_cores(tmp_path, affinity=3, cpu_count=8) == 3
    assert available_cores(tmp_path, affinity=8, cpu_count=6) == 6
    assert available_cores(tmp_path, affinity=0, cpu_count=6) == 1


def test_this_machine_has_at_least_one_core():
    assert 1 <= available_cores() <= (torch.get_num_threads() + 1024)


def test_settings_precedence():
    assert threads_setting(3, {"CNN_KMEANS_THREADS": "2", "OMP_NUM_THREADS": "1"}, 8) == (
        3,
        "--threads",
    )
    assert threads_setting(None, {"CNN_KMEANS_THREADS": "2", "OMP_NUM_THREADS": "1"}, 8)[0] == 2
    assert threads_setting(None, {"OMP_NUM_THREADS": "1"}, 8) == (None, "OMP_NUM_THREADS=1")
    assert threads_setting(None, {}, 8) == (8, "available cores")


@pytest.mark.parametrize("text", ["0", "-1", "two", "1.5"])
def test_bad_threads_variable_is_named(text):
    with pytest.raises(UserError, match="CNN_KMEANS_THREADS"):
        threads_setting(None, {"CNN_KMEANS_THREADS": text}, 8)


def test_torch_threads_sets_then_restores():
    before = torch.get_num_threads()
    with torch_threads(1) as count:
        assert count == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == before


def test_api_default_lowers_torch_count_to_the_cores():
    with torch_threads(4):
        assert default_threads(cores=2) == 2
        assert default_threads(cores=8) == 4
