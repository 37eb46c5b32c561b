"""``python -m resilient_stream.cli``: the ``resilient-stream`` command."""

import sys

from resilient_stream.cli import main

sys.exit(main())
