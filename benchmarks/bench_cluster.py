"""pst.cluster against scikit-learn; see pst/bench/cluster.py (also: `pst bench cluster`)."""
from pst.bench.cluster import main

raise SystemExit(main())
