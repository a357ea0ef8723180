from bjc.commands.cli import main

raise SystemExit(main())
