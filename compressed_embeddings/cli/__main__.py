"""`python -m compressed_embeddings.cli`, as `compressed-embeddings` (also `python -m compressed_embeddings`)."""

import sys

from . import main

sys.exit(main())
