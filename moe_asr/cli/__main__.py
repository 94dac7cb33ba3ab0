import sys

from moe_asr.cli import main

sys.exit(main())
