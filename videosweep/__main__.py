"""`python -m videosweep`: the same entry point as the `videosweep` command."""

from videosweep.cli import main

main()
