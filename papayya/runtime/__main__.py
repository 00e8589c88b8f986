import sys

from papayya.runtime.main import main

sys.exit(main())
