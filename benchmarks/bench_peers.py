"""pst.cluster against fastcluster, scipy and the published MeanShift++; see pst/bench/peers.py (also: `pst bench peers`)."""
from pst.bench.peers import main

raise SystemExit(main())
