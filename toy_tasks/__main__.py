from toy_tasks.cli import main

raise SystemExit(main())
