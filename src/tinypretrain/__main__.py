"""``python -m tinypretrain`` (also what ``torchrun``/``accelerate launch -m tinypretrain`` run)."""

import sys

from .cli import main

sys.exit(main())
