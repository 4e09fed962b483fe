import subprocess
import sys

from hpc_ft.node.task import _process_tree, _process_tree_scan


def test_process_tree_finds_grandchildren_like_a_full_proc_scan():
    # A child that starts a grandchild, both blocked reading stdin until we close it.
    code = "import subprocess,sys; p=subprocess.Popen([sys.executable,'-c','import sys; sys.stdin.read()'],stdin=sys.stdin); print(p.pid, flush=True); p.wait()"
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        grandchild = int(child.stdout.readline())
        tree = _process_tree(child.pid)
        assert child.pid in tree and grandchild in tree
        assert sorted(tree) == sorted(_process_tree_scan(child.pid))
    finally:
        child.stdin.close()
        child.wait(timeout=30)
