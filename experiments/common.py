"""What the experiment mains share: flag parsing that fails in one line."""

import sys

from absl import flags


def parse_flags(argv):
    """absl's parse, but a bad flag or an unknown --config.field ends with one line, not a traceback."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        sys.exit(f"error: {e}\nrun with --helpfull for the flags")
    except (AttributeError, KeyError) as e:
        sys.exit(f"error: no such config field {e} (see the config file for the fields)")
