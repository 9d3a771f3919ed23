"""`python -m runners --spec SPEC.json --out RESULT.json`: the entrypoint of every image."""

from runners.harness import main

raise SystemExit(main())
