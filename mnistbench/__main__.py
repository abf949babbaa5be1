"""``python -m mnistbench`` and the ``mnistbench`` command."""
import sys


def run() -> int:
    """``cli.main``, with a Ctrl-C while torch imports (seconds) said in one line as it is later."""
    try:
        from .cli import main
    except KeyboardInterrupt:
        print("mnistbench: interrupted", file=sys.stderr)
        return 130
    return main()


if __name__ == "__main__":
    sys.exit(run())
