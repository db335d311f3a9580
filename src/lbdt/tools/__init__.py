"""Tools beside the library: `lbdt prepare-data`, `lbdt benchmark` and `lbdt serve`. Only `lbdt.cli` imports
this package; nothing in the library imports it."""
