"""pst.morph against per-instance OpenCV / scipy loops; see pst/bench/morph.py (also: `pst bench morph`)."""
from pst.bench.morph import main

raise SystemExit(main())
