import pytest

from hpc_ft.errors import LaunchError
from hpc_ft.node.hostlist import expand_hostlist


@pytest.mark.parametrize("text,hosts", [
    ("node1", ["node1"]),
    ("node[01-03,7]", ["node01", "node02", "node03", "node7"]),
    ("gpu[07-08],cpu1", ["gpu07", "gpu08", "cpu1"]),
    ("a[1-2]-ib", ["a1-ib", "a2-ib"]),
    ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
    ("n[098-101]", ["n098", "n099", "n100", "n101"]),
])
def test_expand_like_scontrol(text, hosts):
    assert expand_hostlist(text) == hosts


@pytest.mark.parametrize("bad", ["n[1-2", "n1-2]", "n[a-b]", "n[3-1]"])
def test_malformed_hostlists_are_refused(bad):
    with pytest.raises(LaunchError):
        expand_hostlist(bad)
