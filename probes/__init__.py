"""Host probes both sides of the process boundary use: the fingerprint, RAPL and NVML counters,
and the parent watch. Imports `schemas` at most, so a runner image and the controller share it."""
