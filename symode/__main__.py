"""Command line: ``symode cache info`` and ``symode cache clear`` (also ``python -m symode ...``)."""
import argparse
import sys

from . import cache


def main(argv=None):
    ap = argparse.ArgumentParser(prog="symode", description="symode command line")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cache", help="show or clear the cache of generated, compiled models")
    c.add_argument("action", choices=["info", "clear"])
    args = ap.parse_args(argv)
    if args.action == "info":
        i = cache.info()
        print(f"cache directory: {i['path']}")
        print(f"models: {i['models']}")
        print(f"size: {i['bytes'] / 1e6:.2f} MB")
    else:
        n = cache.clear()
        print(f"removed {n} cached model(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
