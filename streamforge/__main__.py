"""`python -m streamforge`: the same as the `streamforge` command."""
from streamforge.commands.main import main

if __name__ == "__main__":
    raise SystemExit(main())
