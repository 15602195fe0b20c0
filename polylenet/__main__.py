import sys

from polylenet.cli import main

sys.exit(main())
