"""`python -m autodep_celery.cli ...` is `autodep ...`."""

import sys

from autodep_celery.cli.main import main

sys.exit(main())
