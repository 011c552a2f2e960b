"""Suite-wide set-up: torchvision imports even though its native ops do not load here."""

from intq.torchvision_compat import import_torchvision

import_torchvision()
