"""python -m device (see device/cli/)."""

import sys

from device import egress

egress.install()  # before anything else runs: every attempt to reach another machine counts

from device.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
