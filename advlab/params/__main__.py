"""`python -m advlab.params [--schema] [PATH]`: check params.yaml or write its JSON schema."""

import sys

from advlab.params import main

sys.exit(main())
