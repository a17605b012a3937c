"""``python -m necroui``: the same as the ``necroui`` command."""

from necroui.cli import main

main()
