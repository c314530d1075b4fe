import sys

from umsrep.cli import main

sys.exit(main())
