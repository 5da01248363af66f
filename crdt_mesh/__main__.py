"""``python -m crdt_mesh``: the ``crdt-mesh`` command."""

import sys

from .cli import main

sys.exit(main())
