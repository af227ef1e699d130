"""`python -m advlab.params [--schema] [PATH]`: check params.yaml or write its JSON schema."""

import sys

from advlab.params import main

if __name__ == "__main__":  # importing it (pkgutil.walk_packages, .ci/wheel) runs nothing
    sys.exit(main())
