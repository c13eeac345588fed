#!/usr/bin/env bash
# The liver demo over seeds and networks: see scripts/demo_seeds.sh (OUT, SEEDS, NETS, RECIPE).
exec bash "$(dirname "$0")/demo_seeds.sh" liver "$@"
