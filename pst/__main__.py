import sys

from pst.cli import main

sys.exit(main())
