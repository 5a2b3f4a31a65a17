"""Sub-commands of the ``spatialfair`` CLI, one module each (see :mod:`spatialfair.cli`)."""
