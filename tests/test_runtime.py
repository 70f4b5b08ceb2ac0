import subprocess
import sys

import pytest

from conftest import REPO

# Allocates and frees blocks of a few MB, a different size each time, as the layers of a predictor do for graph
# mini-batches of varying node counts, and prints how many pages the loop faulted in.
FAULT_COUNTER = """
import resource, sys
if sys.argv[1] == "reuse":
    from iterators.runtime import reuse_freed_memory
    assert reuse_freed_memory()
sizes = [(2 << 20) + 37_000 * ((i * 7) % 50) for i in range(200)]
peak = bytearray(max(sizes)); del peak
start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for n in sizes:
    block = bytearray(n); del block
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", FAULT_COUNTER, mode], cwd=REPO, capture_output=True, text=True,
                         check=True)
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_freed_blocks_are_reused_without_page_faults():
    default, reused = _faults("default"), _faults("reuse")
    assert default > 100  # glibc unmaps such blocks on free and the next one faults its pages in again
    assert reused < default / 20
