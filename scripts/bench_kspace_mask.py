"""Time variable-density Poisson-disk mask generation (issue 4 target: 256x256 under 1 s on CPU).

Usage::

    python scripts/bench_kspace_mask.py [--size 256] [--reps 5]
"""

import argparse
import statistics
import time

from monai_hyperconv.transforms import poisson_disc_mask


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args(argv)
    print(f"| acceleration | median seconds ({args.size}x{args.size}, {args.reps} seeds) | achieved R |")
    print("|---:|---:|---:|")
    for accel in (4, 8, 12):
        times, achieved = [], []
        for seed in range(args.reps):
            t0 = time.perf_counter()
            m = poisson_disc_mask((args.size, args.size), acceleration=accel, seed=seed)
            times.append(time.perf_counter() - t0)
            achieved.append(m.size / m.sum())
        print(f"| {accel} | {statistics.median(times):.3f} | {statistics.mean(achieved):.2f} |")


if __name__ == "__main__":
    main()
