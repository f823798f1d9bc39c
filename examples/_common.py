"""What the examples share: their command line, matplotlib when it is installed, and saving a figure."""
import argparse
import os

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")


def parser(doc, quick_help=None):
    """An ArgumentParser with the options every example takes: --out DIR, and (given quick_help) --quick and
    --no-progress."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT, help="where the plot goes (default: examples/out)")
    if quick_help is not None:
        ap.add_argument("--quick", action="store_true", help=quick_help)
        ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap


def pyplot(extra="examples"):
    """matplotlib.pyplot on the Agg backend, or None (with a message) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed: no plot (pip install 'symode[{extra}]')")
        return None
    return plt


def save(fig, out_dir, name):
    """Save `fig` as out_dir/name, close it, say where, and return the path."""
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, name)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"plot saved to {path}")
    return path
