import sys

from bestofn.cli import main

sys.exit(main())
