"""
Convolution speed against SciPy, OpenCV and torch
=================================================

The course work's first table timed a hand-written 2-D convolution against
``scipy.signal.convolve2d`` on square images of growing size, and plotted the times on a
log scale.  :mod:`fastconv.bench` (the ``fastconv bench`` command) does the same for
:func:`fastconv.signal.convolve2d`, with OpenCV's ``cv2.filter2D`` and torch's ``conv2d``
as further peers.  Every peer computes the same ``'same'``-mode, zero-filled convolution,
and :func:`fastconv.bench.run` checks each result against fastconv's before timing it.

To keep the gallery quick this run uses three image sizes, three kernel sizes and the best
of two short samples per time, on the machine that built this page (which may be busy):
treat the numbers as indicative.  The :doc:`../benchmarks` page shows the committed asv
results, measured with more care.
"""

import matplotlib.pyplot as plt

from fastconv import bench

result = bench.run(sizes=[64, 128, 256], kernels=[3, 7, 15], dtype="float32", repeat=2, budget=0.01)

# %%
# The table
# ---------
# Times per call in milliseconds, then fastconv's speedup over each peer (peer time /
# fastconv time; above 1, fastconv is faster).

print(bench.format_table(result))

# %%
# The plot
# --------
# Time per call against the image size, both on log scales, one panel per kernel size and
# one line per implementation.  Direct convolution costs ``size**2 * k**2`` multiply-adds,
# so once the fixed cost of a call is amortised each line rises by about 4x per doubling
# of the size.

impls = result["implementations"]
fig, axes = plt.subplots(1, len(result["kernels"]), figsize=(11, 3.8), sharey=True)
for ax, k in zip(axes, result["kernels"]):
    rows = [r for r in result["rows"] if r["kernel"] == k]
    sizes = [r["size"] for r in rows]
    for i, impl in enumerate(impls):
        ax.loglog(sizes, [r["times_s"][impl] * 1e3 for r in rows], "o-", base=2, color=f"C{i}", label=impl)
    ax.set_yscale("log", base=10)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_title(f"{k}x{k} kernel")
    ax.set_xlabel("image side (px)")
    ax.grid(True, which="both", alpha=0.3)
axes[0].set_ylabel("ms per call (log)")
axes[-1].legend(fontsize=8)
fig.suptitle("convolve2d(image, kernel, 'same'), float32")
fig.tight_layout()

# %%
# Speedup summary
# ---------------
# The geometric mean of fastconv's speedup over each peer across this grid.

import math

for peer in impls[1:]:
    ratios = [r["speedup"][peer] for r in result["rows"]]
    gm = math.exp(sum(math.log(v) for v in ratios) / len(ratios))
    print(f"{peer:>8}: {gm:6.2f}x  (range {min(ratios):.2f}x - {max(ratios):.2f}x)")
