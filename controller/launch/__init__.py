"""Launchers: where a runner process runs (local environment, Docker, a Slurm node), the
environments and images they need, and the Slurm fleet. `select.select_launcher` picks one."""
