"""`python -m infra_observer`: the same command line as `infra-observer`."""

import sys

from infra_observer.cli import main

sys.exit(main())
