from imdm_lab.allocator import keep_freed_memory

keep_freed_memory()  # before any tensor: large training buffers are reused, not page-faulted in every step

from toy_tasks.cli import main  # noqa: E402

raise SystemExit(main())
