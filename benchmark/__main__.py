"""``python -m benchmark [overrides]``: the same as the ``sanity-check`` command."""

from benchmark.cli import main

if __name__ == "__main__":
    main()
