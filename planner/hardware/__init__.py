"""This host's hardware: detection (GPUs, CPU, RAM), bandwidth measurement, and matching to catalog ids.

Import from the submodules: `planner.hardware.detect` (detect_host, HostInfo ...),
`planner.hardware.match` (match_gpu, match_cpu), `planner.hardware.bandwidth` (measurements).
Kept empty so that importing one does not pull in the others.
"""
