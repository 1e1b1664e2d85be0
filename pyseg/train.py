"""``python -m pyseg.train`` = ``pyseg-train`` (also the module torchrun runs: ``torchrun -m pyseg.train``)."""

import sys

from pyseg.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
