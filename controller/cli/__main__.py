"""`python -m controller.cli`: the same as `bench-ctl`."""

from controller.cli.app import main

main()
