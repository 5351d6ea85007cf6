"""Ops timed idle and while another process keeps every core busy; see pst/bench/contention.py (also: `pst bench contention`)."""
from pst.bench.contention import main

raise SystemExit(main())
