"""``python -m intq.cli ARGS`` (e.g. under ``torchrun ... -m intq.cli qat ...``)."""

import sys

from intq.cli import main

sys.exit(main())
