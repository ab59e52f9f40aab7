import sys

from scale.cli import main

sys.exit(main())
