from broadgauge.cli import main

raise SystemExit(main())
