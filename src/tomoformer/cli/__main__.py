"""``python -m tomoformer.cli`` runs the same CLI as the ``tomoformer`` command."""

import sys

from tomoformer.cli import main

sys.exit(main())
