from lbw_sim.cli import main

raise SystemExit(main())
