#!/usr/bin/env python
"""Print the papers' parameter / receptive-field parity table as Markdown (for the README).

Usage: python scripts/param_table.py [--keras]

``--keras`` adds a column counting batch-norm running statistics as parameters, the convention
of the papers' Keras code (with it our counts equal the official ones exactly).
"""

from __future__ import annotations

import argparse

import torch


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keras", action="store_true", help="also show counts with BN running statistics")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # building ~20 nets: single-threaded init is faster on a busy machine
    from monai_hyperconv.networks import format_parameter_table, parameter_table

    table = parameter_table()
    text = format_parameter_table(table)
    if args.keras:
        lines = text.splitlines()
        lines[0] += " Params (Keras convention) |"
        lines[1] += "---:|"
        lines[2:] = [line + f" {row['params_keras']:,} |" for line, row in zip(lines[2:], table)]
        text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    main()
