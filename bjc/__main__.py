from bjc.cli import main

raise SystemExit(main())
