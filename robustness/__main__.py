"""``python -m robustness`` is ``python -m robustness.bench``."""

from robustness.bench import main

raise SystemExit(main())
