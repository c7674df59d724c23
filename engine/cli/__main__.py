"""``python -m engine.cli`` is the ``enclaveflow`` command (as is ``python -m engine``)."""

from . import main

main()
