#!/usr/bin/env bash
# The MS bundle over seeds: see scripts/demo_seeds.sh (OUT, SEEDS, RECIPE).
exec bash "$(dirname "$0")/demo_seeds.sh" ms "$@"
