"""Allow ``python -m autoseg``."""

from autoseg.cli import console_main

console_main()
