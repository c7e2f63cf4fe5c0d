"""Entry point of the single-file release: the same `streamforge` command as the installed one."""
import sys

from streamforge.commands.main import main

if __name__ == "__main__":
    sys.exit(main())
