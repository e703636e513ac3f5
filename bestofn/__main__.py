import sys

from bestofn.commands import main

sys.exit(main())
