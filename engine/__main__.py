"""``python -m engine`` is the ``enclaveflow`` command."""

from .cli import main

main()
